"""The gateway on NATS, as deployed: a real nats-server (JetStream), a real `asya-host run`
serving the text-pipeline example's actors from it, and `asya-gateway serve` in front; the `asya`
CLI calls the example's tool through the gateway like a user would.

On NATS a tenant's namespace is the namespace of the actors' queues: the example's manifests
say `metadata.namespace: text-pipeline`, so the tenant and its tool are in `text-pipeline`."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from asya.handler_ref import BuildError
from asya.host import find_host_binary
from asya.manifest import load_pipeline
from gateway_env import EXAMPLE, Gateway, asya, free_port, sha256, stop, wait_healthy

TASK_LINE = re.compile(r"\[\.\] Task ID: ([0-9a-f-]{36})")
#: The namespace of every actor manifest of the example.
NAMESPACE = "text-pipeline"


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nats-server exited ({process.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nats-server does not listen on {port} after {timeout} s")


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    """Until `GET url` answers 200 (fails with the process's log if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace")
            pytest.fail(f"{url}: the process exited ({process.returncode}):\n{text}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    text = log.read_text(errors="replace")
    pytest.fail(f"{url} did not answer 200 within {timeout} s:\n{text}")


def test_example_manifests_are_in_one_namespace() -> None:
    """The premise of this module: the tenant namespace below is the actors' namespace."""
    namespaces = set()
    for manifest in sorted((EXAMPLE / "actors").glob("*.yaml")):
        for doc in yaml.safe_load_all(manifest.read_text()):
            if doc:
                namespaces.add(doc["metadata"]["namespace"])
    assert namespaces == {NAMESPACE}


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    store = tmp_path_factory.mktemp("jetstream")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "nats-server"), "-a", "127.0.0.1",
         "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(port, server)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop(server)


@pytest.fixture(scope="module")
def nats_host(
    nats_url: str,
    components: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """`asya-host run` serving every actor of the example from NATS; yields its log."""
    try:
        binary = find_host_binary()
    except BuildError as exc:
        pytest.fail(str(exc))
    log = tmp_path_factory.mktemp("host") / "host.log"
    http = free_port()
    cmd = [str(binary), "run", "--nats", nats_url,
           "--manifests", str(EXAMPLE / "actors"), "--http", f"127.0.0.1:{http}"]  # fmt: skip
    for name, path in components.items():
        cmd += ["--component", f"{name}={path}"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ASYA_LOG": "info"},
        )
    try:
        wait_ready(f"http://127.0.0.1:{http}/readyz", process, log)
        yield log
    finally:
        code = stop(process)
        assert code == 0, (
            f"graceful exit on SIGTERM:\n{log.read_text(errors='replace')}"
        )


@pytest.fixture(scope="module")
def nats_gateway(
    gateway_binary: Path,
    nats_url: str,
    nats_host: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """`asya-gateway serve --nats` with one tenant (namespace text-pipeline) and the example's
    tool."""
    directory = tmp_path_factory.mktemp("nats-gateway")
    key = secrets.token_urlsafe(24)
    (tool,) = load_pipeline(EXAMPLE).tools
    config = {
        "tenants": [
            {"namespace": NAMESPACE, "apiKeys": [{"name": "a", "sha256": sha256(key)}]}
        ],
        "tools": [tool.gateway_config(NAMESPACE)],
    }
    config_file = directory / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = directory / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(gateway_binary), "serve", "--nats", nats_url,
             "--config", str(config_file), "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ASYA_LOG": "info"},
        )  # fmt: skip
    running = Gateway(f"http://127.0.0.1:{port}/", key, "", log)
    try:
        wait_healthy(running, process)
        yield running
    finally:
        stop(process)


def test_mcp_call_through_the_gateway_on_nats(
    nats_gateway: Gateway, nats_host: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "ASYA_CLI_MCP_URL": nats_gateway.url,
        "ASYA_CLI_TOKEN": nats_gateway.key_a,
        "HOME": str(tmp_path),
    }
    logs = "gateway log:\n{}\nhost log:\n{}"

    def diagnose() -> str:
        return logs.format(
            nats_gateway.log_text(), nats_host.read_text(errors="replace")
        )

    proc = asya(env, "mcp", "call", "text-processor", "--text=Hello wonderful world")
    assert proc.returncode == 0, f"{proc.stderr}\n{diagnose()}"
    match = TASK_LINE.search(proc.stderr)
    assert match, proc.stderr
    task_id = match.group(1)
    output = json.loads(proc.stdout)
    assert output["task_id"] == task_id
    assert output["phase"] == "succeeded", f"{output}\n{diagnose()}"
    result = output["result"]
    assert result["clean_text"] == "hello wonderful world"
    assert result["label"] == "positive"
    assert result["summary"].startswith("positive")

    proc = asya(env, "mcp", "status", task_id)
    assert proc.returncode == 0, proc.stderr
    task = json.loads(proc.stdout)
    assert (task["id"], task["phase"], task["tool"], task["namespace"]) == (
        task_id,
        "succeeded",
        "text-processor",
        NAMESPACE,
    )
    assert task["result"] == result
    assert task["hops"] == task["total_hops"] and task["progress"] == 1, task
