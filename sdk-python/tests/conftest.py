"""Shared fixtures: paths of the repository and small handler directories."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    """A directory the test writes handler modules into."""
    d = tmp_path / "handlers"
    d.mkdir()
    return d
