"""The SDK ships a copy of the WIT contract; it must be the repository's."""

from __future__ import annotations

from pathlib import Path

from asya.build import wit_files


def test_sdk_wit_is_the_repository_wit(repo: Path) -> None:
    shipped = wit_files()
    on_disk = {
        str(p.relative_to(repo / "wit")): p.read_text() for p in (repo / "wit").rglob("*.wit")
    }
    assert shipped == on_disk, (
        "sdk-python/src/asya/wit differs from wit/: copy wit/actor.wit and wit/deps/ over"
    )
