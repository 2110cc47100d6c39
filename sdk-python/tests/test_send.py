"""`asya send --wait` against a real nats-server and a real `asya-host run`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asya.build import build


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def nats_url() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as store:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "nats-server"), "-a", "127.0.0.1", "-p", str(port),
             "-js", "-sd", store],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(port)
            yield f"nats://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait()


def test_send_and_wait_prints_the_final_envelope(repo: Path, nats_url: str, tmp_path: Path) -> None:
    example = repo / "examples" / "text-pipeline"
    components = []
    for name, handler in [
        ("preprocess", "preprocessor.process"),
        ("classify", "classifier.TextClassifier.process"),
        ("postprocess", "postprocessor.process"),
    ]:
        out = build(handler, example, example / ".asya" / "build" / f"{name}.wasm")
        components += ["--component", f"{name}={out.output}"]
    manifests = tmp_path / "actors"
    manifests.mkdir()
    for name in ("preprocess", "classify", "postprocess"):
        (manifests / f"{name}.yaml").write_text((example / "actors" / f"{name}.yaml").read_text())
    http = free_port()
    host_bin = repo / "target" / "release" / "asya-host"
    host = subprocess.Popen(
        [str(host_bin), "run", "--nats", nats_url, "--manifests", str(manifests),
         "--http", f"127.0.0.1:{http}", *components],
        env={**os.environ, "ASYA_LOG": "warn"},
    )  # fmt: skip
    try:
        wait_port(http, timeout=60)
        cli = Path(sys.executable).parent / "asya"
        proc = subprocess.run(
            [str(cli), "send", "--nats", nats_url, "--namespace", "text-pipeline",
             "--route", "preprocess,classify,postprocess",
             "--payload", '{"text": "what a wonderful day"}', "--wait"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        final = json.loads(proc.stdout)
        assert final["status"]["phase"] == "succeeded"
        assert final["payload"]["label"] == "positive"
        assert final["route"]["prev"] == ["preprocess", "classify", "postprocess"]
    finally:
        host.terminate()
        assert host.wait(timeout=30) == 0, "graceful exit on SIGTERM"
