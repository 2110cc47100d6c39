"""The SDK ships a copy of the WIT contract; it must be the repository's."""

from __future__ import annotations

from pathlib import Path

from asya.build import wit_text


def test_sdk_wit_is_the_repository_wit(repo: Path) -> None:
    assert wit_text() == (repo / "wit" / "actor.wit").read_text(), (
        "sdk-python/src/asya/wit/actor.wit differs from wit/actor.wit: copy it over"
    )
