"""Starting and stopping a real `asya-gateway dev` in front of the text-pipeline example, and
running the `asya` CLI against it (the fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from asya.manifest import load_pipeline

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "text-pipeline"
#: Where scripts/setup.sh installs the MCP Inspector.
INSPECTOR_PREFIX = REPO / ".cache" / "npm-inspector"


@dataclass(frozen=True)
class Gateway:
    """A running gateway: its root URL (ending with `/`) and the two tenants' API keys
    (tenant A's tools: `text-processor` and `review-text`, which pauses; tenant B's:
    `other-preprocess`)."""

    url: str
    key_a: str
    key_b: str
    log: Path

    @property
    def mcp_url(self) -> str:
        return self.url + "mcp"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def gateway_config(key_a: str, key_b: str) -> dict[str, object]:
    (tool,) = load_pipeline(EXAMPLE).tools
    return {
        "tenants": [
            {
                "namespace": "default",
                "apiKeys": [{"name": "a", "sha256": sha256(key_a)}],
            },
            {"namespace": "other", "apiKeys": [{"name": "b", "sha256": sha256(key_b)}]},
        ],
        "tools": [
            tool.gateway_config("default"),
            {
                "name": "review-text",
                "namespace": "default",
                "description": "Classifies a text, then waits for a human before the summary.",
                "route": ["preprocess", "classify", "x-pause", "postprocess"],
                "inputSchema": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                },
            },
            {
                "name": "other-preprocess",
                "namespace": "other",
                "description": "Tenant B's own tool.",
                "route": ["preprocess"],
                "inputSchema": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                },
            },
        ],
    }


def start_gateway(
    binary: Path, components: dict[str, Path], directory: Path
) -> tuple[subprocess.Popen[bytes], Gateway]:
    key_a, key_b = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    config = directory / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(key_a, key_b), sort_keys=False))
    port = free_port()
    cmd = [str(binary), "dev", "--listen", f"127.0.0.1:{port}", "--config", str(config),
           "--manifests", str(EXAMPLE / "actors"), "--python", sys.executable]  # fmt: skip
    for name, path in components.items():
        cmd += ["--component", f"{name}={path}"]
    log = directory / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ASYA_LOG": "info"},
        )
    gateway = Gateway(f"http://127.0.0.1:{port}/", key_a, key_b, log)
    wait_healthy(gateway, process)
    return process, gateway


def wait_healthy(
    gateway: Gateway, process: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """Until `GET /healthz` answers 200 (fails with the gateway's log if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the gateway exited ({process.returncode}):\n{gateway.log_text()}"
            )
        try:
            if httpx.get(gateway.url + "healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(
        f"the gateway did not answer /healthz within {timeout} s:\n{gateway.log_text()}"
    )


def stop(process: subprocess.Popen[bytes]) -> int:
    process.terminate()
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def asya(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs the `asya` CLI of this virtual environment."""
    cli = Path(sys.executable).parent / "asya"
    return subprocess.run(
        [str(cli), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
