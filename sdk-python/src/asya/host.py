"""Finding the Rust binaries: `asya-host` (runs the components) and `asya-gateway` (the HTTP
API and MCP server in front of them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .handler_ref import BuildError


def _find_binary(name: str, env_var: str, crate: str) -> Path:
    """`$<env_var>`, else `name` on PATH, else `target/release/<name>` of the checkout this SDK
    (or the working directory) lives in."""
    if env := os.environ.get(env_var):
        path = Path(env)
        if not path.is_file():
            raise BuildError(f"{env_var}={env} does not exist")
        return path
    if found := shutil.which(name):
        return Path(found)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for directory in (start, *start.parents):
            candidate = directory / "target" / "release" / name
            if candidate.is_file():
                return candidate
    raise BuildError(
        f"cannot find the {name} binary: build it with `cargo build --release -p {crate}` "
        f"(or set {env_var})"
    )


def find_host_binary() -> Path:
    """`$ASYA_HOST_BIN`, else `asya-host` on PATH, else `target/release/asya-host` of the
    checkout this SDK (or the working directory) lives in."""
    return _find_binary("asya-host", "ASYA_HOST_BIN", "asya-host")


def find_gateway_binary() -> Path:
    """`$ASYA_GATEWAY_BIN`, else `asya-gateway` on PATH, else `target/release/asya-gateway` of
    the checkout this SDK (or the working directory) lives in."""
    return _find_binary("asya-gateway", "ASYA_GATEWAY_BIN", "asya-gateway")
