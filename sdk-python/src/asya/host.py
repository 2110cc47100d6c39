"""Finding the `asya-host` binary (the Rust host that runs the components)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .handler_ref import BuildError


def find_host_binary() -> Path:
    """`$ASYA_HOST_BIN`, else `asya-host` on PATH, else `target/release/asya-host` of the
    checkout this SDK (or the working directory) lives in."""
    if env := os.environ.get("ASYA_HOST_BIN"):
        path = Path(env)
        if not path.is_file():
            raise BuildError(f"ASYA_HOST_BIN={env} does not exist")
        return path
    if found := shutil.which("asya-host"):
        return Path(found)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for directory in (start, *start.parents):
            candidate = directory / "target" / "release" / "asya-host"
            if candidate.is_file():
                return candidate
    raise BuildError(
        "cannot find the asya-host binary: build it with `cargo build --release -p asya-host` "
        "(or set ASYA_HOST_BIN)"
    )
