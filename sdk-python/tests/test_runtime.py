"""The native runtime (`python -m asya.runtime`) speaks asya-runtime/2 over a Unix socket: many
calls in flight on one connection, answered as they finish."""

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
import time

class Model:
    constructions = 0

    def __init__(self, name: str = "m"):
        Model.constructions += 1

    def process(self, payload):
        return {**payload, "constructions": Model.constructions}


async def fetch(payload):
    await asyncio.sleep(payload.get("sleep", 0.01))  # real awaiting: needs the event loop
    return {**payload, "loop": id(asyncio.get_running_loop())}


def block(payload):
    time.sleep(payload.get("sleep", 0.2))
    return payload


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

    def send(self, call_id: int, payload: dict[str, Any] | None, kind: int = 0) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.sock.sendall(struct.pack(">IBQ", len(body) + 9, kind, call_id) + body)

    def receive(self) -> tuple[int, str, Any]:
        """One response: its call id, kind and decoded body."""
        length, kind, call_id = struct.unpack(">IBQ", self._exact(13))
        body = self._exact(length - 9)
        name = {0: "ok", 1: "none", 2: "error"}[kind]
        return call_id, name, json.loads(body) if body else None

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "runtime closed the connection"
            data += chunk
        return data

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.send(7, payload)
        call_id, kind, body = self.receive()
        assert call_id == 7
        return {kind: body}


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
def block(tmp_path: Path) -> Iterator[str]:
    yield from start(tmp_path, "handlers.block")


@pytest.fixture
def boom(tmp_path: Path) -> Iterator[str]:
    yield from start(tmp_path, "handlers.boom")


def test_hello_and_class_constructed_once(model: str) -> None:
    a, b = Client(model), Client(model)
    assert a.hello["protocol"] == "asya-runtime/2"
    assert a.hello["handler"] == "handlers.Model.process"
    assert a.hello["mode"] == "payload"
    assert a.hello["concurrency"] == "threads"
    results = [c.call({"i": i})["ok"] for i, c in enumerate([a, b, a, b])]
    assert [r["constructions"] for r in results] == [1, 1, 1, 1]


def test_async_handlers_share_one_event_loop(fetch: str) -> None:
    a, b = Client(fetch), Client(fetch)
    assert a.hello["concurrency"] == "async"
    loops = {c.call({"x": 1})["ok"]["loop"] for c in [a, b, a]}
    assert len(loops) == 1, "one event loop for the process, not one per message"


def test_exceptions_carry_type_mro_and_traceback(boom: str) -> None:
    error = Client(boom).call({})["error"]
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


def test_async_calls_in_flight_on_one_connection_finish_as_they_finish(fetch: str) -> None:
    client = Client(fetch)
    started = time.monotonic()
    for call_id in range(50):
        # The first call sleeps longest: its answer comes last, the others do not wait for it.
        client.send(call_id, {"i": call_id, "sleep": 0.5 if call_id == 0 else 0.2})
    order = [client.receive() for _ in range(50)]
    took = time.monotonic() - started
    assert sorted(call_id for call_id, _, _ in order) == list(range(50))
    assert all(kind == "ok" and body["i"] == call_id for call_id, kind, body in order)
    assert order[-1][0] == 0
    assert took < 2.0, f"50 calls of 0.2 s in flight at once took {took:.2f} s"


def test_a_cancelled_async_call_stops_and_the_others_finish(fetch: str) -> None:
    client = Client(fetch)
    client.send(1, {"i": 1, "sleep": 30})
    client.send(2, {"i": 2, "sleep": 0.2})
    client.send(1, None, kind=1)  # cancel call 1
    call_id, kind, body = client.receive()
    assert (call_id, kind, body["i"]) == (2, "ok", 2)
    # Nothing more comes for the cancelled call; the connection still serves.
    client.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        client.receive()
    client.sock.settimeout(None)
    assert client.call({"i": 3, "sleep": 0})["ok"]["i"] == 3


def test_plain_functions_run_on_threads_in_parallel(block: str) -> None:
    client = Client(block)
    started = time.monotonic()
    for call_id in range(8):
        client.send(call_id, {"i": call_id, "sleep": 0.3})
    answers = sorted(client.receive()[0] for _ in range(8))
    took = time.monotonic() - started
    assert answers == list(range(8))
    assert took < 1.5, f"8 blocking calls of 0.3 s on threads took {took:.2f} s"


def test_a_frame_that_is_not_the_protocol_drops_only_that_connection(fetch: str) -> None:
    bad, good = Client(fetch), Client(fetch)
    bad.sock.sendall(struct.pack(">IBQ", 9, 7, 1))  # kind 7 does not exist
    assert bad.sock.recv(1) == b"", "the runtime closes a connection that breaks the protocol"
    assert good.call({"i": 1, "sleep": 0})["ok"]["i"] == 1


def test_input_that_is_not_json_is_a_type_error(fetch: str) -> None:
    client = Client(fetch)
    body = b"{not json"
    client.sock.sendall(struct.pack(">IBQ", len(body) + 9, 0, 5) + body)
    call_id, kind, error = client.receive()
    assert (call_id, kind, error["type"]) == (5, "error", "TypeError")
