"""A real `asya-gateway dev` in front of the text-pipeline example, shared by the gateway tests.

The example's components are built once per session (cached builds: a file copy each), the
gateway starts on a free port with a config of two tenants: `default` (key A, the tools
`text-processor` and `review-text`, which pauses for a human) and `other` (key B, its own tool
`other-preprocess`), and is stopped at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from asya.build import build
from asya.handler_ref import BuildError
from asya.host import find_gateway_binary
from asya.manifest import load_pipeline
from gateway_env import EXAMPLE, Gateway, start_gateway, stop


@pytest.fixture(scope="session")
def gateway_binary() -> Path:
    try:
        return find_gateway_binary()
    except BuildError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def components(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every WASM actor of the example, built (from the build cache after the first run)."""
    out = tmp_path_factory.mktemp("components")
    built = {}
    for actor in load_pipeline(EXAMPLE).actors:
        if actor.runtime == "wasm":
            result = build(
                actor.handler, EXAMPLE, out / f"{actor.name}.wasm", actor.mode
            )
            built[actor.name] = result.output
    return built


@pytest.fixture(scope="session")
def gateway(
    gateway_binary: Path,
    components: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    process, running = start_gateway(
        gateway_binary, components, tmp_path_factory.mktemp("gateway")
    )
    try:
        yield running
    finally:
        stop(process)


@pytest.fixture
def cli_env(gateway: Gateway, tmp_path: Path) -> dict[str, str]:
    """The environment of an `asya` command pointed at the gateway as tenant A (and a HOME of
    its own, so no real ~/.asya/gateway-token is read)."""
    return {
        **os.environ,
        "ASYA_CLI_MCP_URL": gateway.url,
        "ASYA_CLI_TOKEN": gateway.key_a,
        "HOME": str(tmp_path),
    }
