"""`asya build`: a plain Python handler becomes a WebAssembly component.

Steps: resolve and statically check the handler, generate the adapter, and run componentize-py.
The result is cached by a content hash of everything that goes into it (sources, adapter, WIT,
tool versions), so rebuilding unchanged inputs costs a file copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import __version__
from .adapter import (
    ADAPTER_MODULE,
    ASYNC_MODULE,
    BUILD_ERROR_MARKER,
    ERROR_CLASS,
    HANDLING_MODULE,
    SANDBOX_MODULE,
    render,
)
from .handler_ref import BuildError, check_source, is_async_handler, resolve

MODES = ("payload", "envelope")
WORLD = "actor"
#: The world of an `async def` handler: `handle` is a component-model async export.
ASYNC_WORLD = "actor-async"
# `asya` inside a component: only `asya.http`, which an `async def` handler may import.
_COMPONENT_ASYA_INIT = '''"""asya inside a component: only `asya.http` (awaitable outbound HTTP)."""
'''
_SKIP_DIRS = {"__pycache__", ".git", ".asya", ".venv", "node_modules", "target"}
_CACHE_FORMAT = "1"


@dataclass(frozen=True)
class BuildResult:
    """What `build` produced."""

    output: Path
    digest: str
    cached: bool
    seconds: float
    source_key: str = ""


def cache_dir() -> Path:
    """Where built components are cached: `$ASYA_CACHE_DIR`, else `~/.cache/asya`."""
    if env := os.environ.get("ASYA_CACHE_DIR"):
        return Path(env)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "asya"
    return Path.home() / ".cache" / "asya"


def wit_files() -> dict[str, str]:
    """The `asya:actor` WIT contract shipped with the SDK, with the WASI packages it imports:
    relative path -> text."""
    root = resources.files("asya").joinpath("wit")
    files = {"actor.wit": root.joinpath("actor.wit").read_text(encoding="utf-8")}
    for dep in sorted(root.joinpath("deps").iterdir(), key=lambda p: p.name):
        if dep.name.endswith(".wit"):
            files[f"deps/{dep.name}"] = dep.read_text(encoding="utf-8")
    return files


def wit_text() -> str:
    """All of the WIT the SDK ships, as one text (what the build cache keys on)."""
    return "".join(f"// {name}\n{text}" for name, text in wit_files().items())


def guest_sandbox_source() -> str:
    """The in-component outbound-HTTP and sandbox-refusal module, copied into every component."""
    return resources.files("asya").joinpath("guest_sandbox.py").read_text(encoding="utf-8")


def guest_async_source() -> str:
    """The in-component asyncio timers and wasi:http 0.3 module, copied into async components."""
    return resources.files("asya").joinpath("guest_async.py").read_text(encoding="utf-8")


def http_source() -> str:
    """`asya.http`, copied into every component (it works in async ones)."""
    return resources.files("asya").joinpath("http.py").read_text(encoding="utf-8")


def handling_source() -> str:
    """The shared handling module, copied into every component."""
    return resources.files("asya").joinpath("handling.py").read_text(encoding="utf-8")


def componentize_py_version() -> str:
    from importlib.metadata import version

    return version("componentize-py")


def source_files(source_dir: Path) -> list[Path]:
    """Files bundled with the handler: everything under `source_dir` except caches and VCS."""
    files = []
    for root, dirs, names in os.walk(source_dir):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(names):
            if name.endswith((".pyc", ".wasm")):
                continue
            files.append(Path(root) / name)
    return files


def content_key(source_dir: Path, adapter: str, wit: str) -> str:
    """SHA-256 over every input of a build; equal keys give equal components."""
    h = hashlib.sha256()
    for part in (_CACHE_FORMAT, __version__, componentize_py_version(), adapter, wit):
        h.update(part.encode())
        h.update(b"\0")
    for path in source_files(source_dir):
        h.update(str(path.relative_to(source_dir)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


ProgressHook = Callable[[str], None]


def build(
    handler: str,
    source_dir: Path,
    output: Path,
    mode: str = "payload",
    *,
    use_cache: bool = True,
    on_start: ProgressHook | None = None,
) -> BuildResult:
    """Builds `handler` (found under `source_dir`) into the component `output`.

    `on_start` is called (with a short description) just before componentize-py runs, so a CLI
    can show progress; it is not called on a cache hit. Raises `BuildError` with a clear message
    for anything wrong with the handler.
    """
    started = time.monotonic()
    if mode not in MODES:
        raise BuildError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    source_dir = source_dir.resolve()
    if not source_dir.is_dir():
        raise BuildError(f"source directory {source_dir} does not exist")
    ref, path = resolve(handler, source_dir)
    check_source(ref, path)
    is_async = is_async_handler(ref, path)
    adapter = render(ref, mode, __version__, is_async)
    handling = handling_source()
    sandbox = guest_sandbox_source()
    extra = {"asya/__init__.py": _COMPONENT_ASYA_INIT, "asya/http.py": http_source()}
    if is_async:
        extra[f"{ASYNC_MODULE}.py"] = guest_async_source()
    wit = wit_text()
    key = content_key(source_dir, adapter + handling + sandbox + "".join(extra.values()), wit)
    cached = cache_dir() / "components" / f"{key}.wasm"
    output.parent.mkdir(parents=True, exist_ok=True)
    if use_cache and cached.is_file():
        _copy(cached, output)
        return BuildResult(output, sha256_file(output), True, time.monotonic() - started, key)
    if on_start is not None:
        on_start(f"componentize-py {ref.text} ({mode}{', async' if is_async else ''})")
    with tempfile.TemporaryDirectory(prefix="asya-build-") as tmp:
        work = Path(tmp)
        (work / f"{ADAPTER_MODULE}.py").write_text(adapter, encoding="utf-8")
        (work / f"{HANDLING_MODULE}.py").write_text(handling, encoding="utf-8")
        (work / f"{SANDBOX_MODULE}.py").write_text(sandbox, encoding="utf-8")
        for name, text in extra.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text, encoding="utf-8")
        wit_dir = work / "wit"
        for name, text in wit_files().items():
            (wit_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (wit_dir / name).write_text(text, encoding="utf-8")
        built = work / "component.wasm"
        _componentize(wit_dir, work, source_dir, built, ASYNC_WORLD if is_async else WORLD)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(built, partial)
        os.replace(partial, cached)
    _copy(cached, output)
    return BuildResult(output, sha256_file(output), False, time.monotonic() - started, key)


def _copy(src: Path, dst: Path) -> None:
    if (
        dst.exists()
        and dst.stat().st_size == src.stat().st_size
        and dst.read_bytes() == src.read_bytes()
    ):
        return
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _componentize(wit_dir: Path, work: Path, source_dir: Path, out: Path, world: str) -> None:
    exe = shutil.which("componentize-py") or str(Path(sys.executable).parent / "componentize-py")
    cmd = [
        exe,
        "-d", str(wit_dir),
        "-w", world,
        "componentize", ADAPTER_MODULE,
        "-p", str(work),
        "-p", str(source_dir),
        "-o", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.is_file():
        raise BuildError(explain_failure(proc.stdout + proc.stderr))


def explain_failure(log: str) -> str:
    """Turns componentize-py's output into the message a user needs."""
    raised = f"{ERROR_CLASS}: {BUILD_ERROR_MARKER}"
    for line in log.splitlines():
        if raised in line:
            return line.split(raised, 1)[1].strip()
    lines = [line for line in log.strip().splitlines() if line.strip()]
    # A Python exception during pre-initialisation ends with "Type: message".
    for line in reversed(lines):
        stripped = line.strip()
        if ("Error" in stripped or "Exception" in stripped) and ":" in stripped:
            if stripped.startswith(("Caused by", "Error:")):
                continue
            tail = "\n".join(lines[-15:])
            return f"the handler failed while loading at build time: {stripped}\n{tail}"
    tail = "\n".join(lines[-20:])
    return f"componentize-py failed:\n{tail}"
