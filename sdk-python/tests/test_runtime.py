"""The native runtime (`python -m asya.runtime`) speaks asya-runtime/1 over a Unix socket."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HANDLERS = """
import asyncio

class Model:
    constructions = 0

    def __init__(self, name: str = "m"):
        Model.constructions += 1

    def process(self, payload):
        return {**payload, "constructions": Model.constructions}


async def fetch(payload):
    await asyncio.sleep(0.01)  # real awaiting: needs the runtime's event loop
    return {**payload, "loop": id(asyncio.get_running_loop())}


def boom(payload):
    raise ValueError("bad input")
"""


class Client:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.hello = self.read()

    def read(self) -> dict[str, Any]:
        (n,) = struct.unpack(">I", self._exact(4))
        return json.loads(self._exact(n))

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "runtime closed the connection"
            data += chunk
        return data

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps({"id": 7, "input": json.dumps(payload)}).encode()
        self.sock.sendall(struct.pack(">I", len(body)) + body)
        return self.read()


def start(tmp_path: Path, handler: str) -> Iterator[str]:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    path = str(tmp_path / f"{handler}.sock")
    env = {**os.environ, "ASYA_HANDLER": handler, "ASYA_RUNTIME_SOCKET": path,
           "ASYA_SOURCE_DIR": str(tmp_path)}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "asya.runtime"], env=env)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(path):
            assert time.monotonic() < deadline, "runtime did not start"
            assert proc.poll() is None, "runtime exited"
            time.sleep(0.02)
        yield path
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def model(tmp_path: Path) -> Iterator[str]:
    yield from start(tmp_path, "handlers.Model.process")


@pytest.fixture
def fetch(tmp_path: Path) -> Iterator[str]:
    yield from start(tmp_path, "handlers.fetch")


@pytest.fixture
def boom(tmp_path: Path) -> Iterator[str]:
    yield from start(tmp_path, "handlers.boom")


def test_hello_and_class_constructed_once(model: str) -> None:
    a, b = Client(model), Client(model)
    assert a.hello["protocol"] == "asya-runtime/1"
    assert a.hello["handler"] == "handlers.Model.process"
    assert a.hello["mode"] == "payload"
    results = [json.loads(c.call({"i": i})["ok"]) for i, c in enumerate([a, b, a, b])]
    assert [r["constructions"] for r in results] == [1, 1, 1, 1]


def test_async_handlers_share_one_event_loop(fetch: str) -> None:
    a, b = Client(fetch), Client(fetch)
    loops = {json.loads(c.call({"x": 1})["ok"])["loop"] for c in [a, b, a]}
    assert len(loops) == 1, "one event loop for the process, not one per message"


def test_exceptions_carry_type_mro_and_traceback(boom: str) -> None:
    response = Client(boom).call({})
    error = response["error"]
    assert response["id"] == 7
    assert error["type"] == "ValueError"
    # As Asya writes them: builtins bare, the class itself, object and BaseException left out.
    assert error["mro_names"] == ["Exception"]
    assert "in boom" in error["traceback"]


def test_missing_handler_fails_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    env = {**os.environ, "ASYA_HANDLER": "handlers.nothere", "ASYA_SOURCE_DIR": str(tmp_path),
           "ASYA_RUNTIME_SOCKET": str(tmp_path / "x.sock")}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "asya.runtime"], env=env, capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "has no function 'nothere'" in proc.stderr
