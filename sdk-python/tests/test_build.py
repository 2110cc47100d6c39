"""Real builds with componentize-py: success, the content-hash cache, and build-time errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asya.adapter import render
from asya.build import build
from asya.handler_ref import BuildError, HandlerRef


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYA_CACHE_DIR", str(tmp_path / "cache"))


def test_adapter_is_valid_python() -> None:
    for mode in ("payload", "envelope"):
        for is_async in (False, True):
            for ref in (HandlerRef("m", "C", "f"), HandlerRef("m", None, "f")):
                compile(render(ref, mode, "0.0", is_async), "adapter", "exec")


def test_async_adapter_awaits_the_handler_and_installs_timers() -> None:
    source = render(HandlerRef("m", None, "f"), "payload", "0.0", is_async=True)
    assert "async def handle(self, input):" in source
    assert "await _h.call_async(" in source
    assert "_async.install()" in source
    plain = render(HandlerRef("m", None, "f"), "payload", "0.0")
    assert "async def handle" not in plain and "_asya_async" not in plain


def test_an_async_handler_builds_into_the_async_world(handlers: Path, tmp_path: Path) -> None:
    (handlers / "judge.py").write_text(
        "import asyncio\nimport asya.http\n\n"
        "async def judge(p):\n    await asyncio.sleep(0)\n    return {**p, 'ok': True}\n"
    )
    started: list[str] = []
    result = build("judge.judge", handlers, tmp_path / "judge.wasm", on_start=started.append)
    assert started == ["componentize-py judge.judge (payload, async)"]
    data = result.output.read_bytes()
    # The async export and the WASI 0.3 imports are in the component's type section.
    assert b"wasi:http/client@0.3.0" in data
    assert b"wasi:clocks/monotonic-clock@0.3.0" in data


def test_build_then_rebuild_from_cache(handlers: Path, tmp_path: Path) -> None:
    (handlers / "pre.py").write_text("def process(p):\n    return {**p, 'ok': True}\n")
    out = tmp_path / "pre.wasm"
    first = build("pre.process", handlers, out)
    assert not first.cached
    assert out.read_bytes()[:4] == b"\0asm"
    assert out.stat().st_size > 1_000_000
    second = build("pre.process", handlers, tmp_path / "again.wasm")
    assert second.cached
    assert second.digest == first.digest
    assert second.seconds < 1.0, "a cached build is a copy"
    # Any change to the sources is a new build.
    (handlers / "pre.py").write_text("def process(p):\n    return {**p, 'ok': False}\n")
    third = build("pre.process", handlers, tmp_path / "third.wasm")
    assert not third.cached and third.digest != first.digest


def test_import_error_at_build_time_is_explained(handlers: Path, tmp_path: Path) -> None:
    (handlers / "needs.py").write_text(
        "import not_a_real_package\n\ndef process(p):\n    return p\n"
    )
    with pytest.raises(BuildError, match="not_a_real_package"):
        build("needs.process", handlers, tmp_path / "x.wasm")


def test_inherited_init_without_default_fails_in_the_adapter(
    handlers: Path, tmp_path: Path
) -> None:
    # The static check cannot see an inherited __init__; the adapter checks at build time.
    (handlers / "base.py").write_text(
        "class Base:\n    def __init__(self, model_path):\n        self.p = model_path\n"
    )
    (handlers / "child.py").write_text(
        "from base import Base\n\nclass Child(Base):\n    def process(self, p):\n        return p\n"
    )
    with pytest.raises(BuildError, match=r"parameter 'model_path' has no default"):
        build("child.Child.process", handlers, tmp_path / "x.wasm")


def test_cli_build_reports_errors_without_a_traceback(handlers: Path, tmp_path: Path) -> None:
    (handlers / "m.py").write_text("def f(p):\n  return p\n")
    cli = Path(sys.executable).parent / "asya"
    proc = subprocess.run(
        [str(cli), "build", "m.g", "--source", str(handlers), "-o", str(tmp_path / "o.wasm")],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert proc.returncode == 1
    assert "defines no function 'g'" in proc.stderr
    assert "Traceback" not in proc.stderr
