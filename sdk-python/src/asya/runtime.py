"""The native-Python runtime: `python -m asya.runtime`, for handlers that cannot be WASM (torch,
CUDA, C extensions). Standard library only, so it can be dropped into any user image.

It loads `ASYA_HANDLER` with exactly the rules of the WASM build (`asya.handling` is the same
code) and serves the asya host over a Unix socket. The host applies all sidecar logic (routing,
retries, timeouts, metrics); this process only runs the handler.

Environment:
  ASYA_HANDLER          `module.func` or `module.Class.method` (required)
  ASYA_HANDLER_MODE     `payload` (default) or `envelope`
  ASYA_RUNTIME_SOCKET   socket path (default /var/run/asya/runtime.sock)
  ASYA_RUNTIME_THREADS  most worker threads for a plain-function handler (default 64)
  ASYA_SOURCE_DIR       directory put first on sys.path (default: the working directory)

Protocol `asya-runtime/2` (stream socket). One persistent connection carries every call in
flight; the runtime answers each call when its handler finishes, in any order.
  runtime → host, once per connection: a 4-byte big-endian length, then that many bytes of
      UTF-8 JSON {"protocol": "asya-runtime/2", "handler": str, "mode": "payload"|"envelope",
                  "sdk_version": str, "concurrency": "async"|"threads"}
  then frames both ways: length (u32), kind (u8), call id (u64), all big-endian, then the body;
  the length counts kind, id and body.
  host → runtime:  kind 0 call    body: the input, JSON text (payload or envelope)
                   kind 1 cancel  no body: the host gave up on this call (timeout)
  runtime → host:  kind 0 ok      body: the handler's result, JSON text
                   kind 1 none    no body: the handler returned None
                   kind 2 error   body: JSON {"type", "message", "mro_names", "traceback"}
Bodies travel as they are: no JSON text is escaped into another JSON document.

All handlers share one event loop. `async def` handlers run on it, one task per call, and a
cancel cancels the task. Plain functions run on worker threads (started as calls need them, up
to ASYA_RUNTIME_THREADS) so the loop stays responsive; a cancelled call's thread cannot be
stopped and runs on, and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import struct
import sys
import threading
from typing import Any

from . import __version__
from .handling import (
    HandlerFailure,
    LoadError,
    call,
    call_async,
    encode_result,
    load_handler,
    parse_input,
    type_error,
)

PROTOCOL = "asya-runtime/2"
DEFAULT_SOCKET = "/var/run/asya/runtime.sock"
DEFAULT_THREADS = 64
MAX_FRAME = 256 << 20
HEADER = struct.Struct(">IBQ")
LENGTH = struct.Struct(">I")
KIND_CALL, KIND_CANCEL = 0, 1
KIND_OK, KIND_NONE, KIND_ERROR = 0, 1, 2


def frame(kind: int, call_id: int, body: bytes = b"") -> bytes:
    return HEADER.pack(len(body) + 9, kind, call_id) + body


def outcome(result: Any) -> tuple[int, bytes]:
    """A response's kind and body for what the handler returned (raises HandlerFailure)."""
    encoded = encode_result(result)
    return (KIND_NONE, b"") if encoded is None else (KIND_OK, encoded.encode())


def error(failure: HandlerFailure) -> tuple[int, bytes]:
    return KIND_ERROR, json.dumps(failure.fields).encode()


def decode(body: bytes) -> Any:
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise type_error(f"input is not UTF-8: {exc}") from None
    return parse_input(text)


class Connection(asyncio.Protocol):
    """One host connection: splits the byte stream into frames, starts calls, and writes their
    responses, coalescing those of one loop iteration into one write."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.outgoing: list[bytes] = []
        # The calls of an `async def` handler running now, by id (what a cancel cancels).
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        hello = json.dumps(self.runtime.hello()).encode()
        transport.write(LENGTH.pack(len(hello)) + hello)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos, end = 0, len(buffer)
        while end - pos >= HEADER.size:
            length, kind, call_id = HEADER.unpack_from(buffer, pos)
            if not 9 <= length <= MAX_FRAME or kind not in (KIND_CALL, KIND_CANCEL):
                self.drop(f"a frame of kind {kind} and {length} bytes is not asya-runtime/2")
                return
            if end - pos - 4 < length:
                break
            body = bytes(buffer[pos + HEADER.size : pos + 4 + length])
            pos += 4 + length
            if kind == KIND_CALL:
                self.runtime.start(self, call_id, body)
            else:
                self.cancel(call_id)
        del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    def drop(self, why: str) -> None:
        print(f"asya runtime: dropping a connection: {why}", file=sys.stderr, flush=True)
        if self.transport is not None:
            self.transport.close()

    def cancel(self, call_id: int) -> None:
        # A plain function's thread cannot be stopped: the host ignores its late response.
        task = self.tasks.pop(call_id, None)
        if task is not None:
            task.cancel()

    def reply(self, call_id: int, kind: int, body: bytes) -> None:
        """Queues a response (on the loop's thread); the loop writes them all at once."""
        if self.transport is None:
            return
        if not self.outgoing:
            self.loop.call_soon(self.flush)
        self.outgoing.append(frame(kind, call_id, body))

    def flush(self) -> None:
        if self.transport is not None:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()


class Workers:
    """Threads for a plain-function handler, started as calls need them, up to `limit`."""

    def __init__(self, fn: Any, limit: int) -> None:
        self.fn = fn
        self.limit = max(1, limit)
        self.jobs: queue.SimpleQueue[tuple[Connection, int, bytes]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads = 0
        self.idle = 0

    def submit(self, conn: Connection, call_id: int, body: bytes) -> None:
        self.jobs.put((conn, call_id, body))
        with self.lock:
            if self.jobs.qsize() > self.idle and self.threads < self.limit:
                self.threads += 1
                threading.Thread(target=self.work, name="asya-handler", daemon=True).start()

    def work(self) -> None:
        while True:
            with self.lock:
                self.idle += 1
            conn, call_id, body = self.jobs.get()
            with self.lock:
                self.idle -= 1
            try:
                kind, out = outcome(call(self.fn, decode(body)))
            except HandlerFailure as failure:
                kind, out = error(failure)
            conn.loop.call_soon_threadsafe(conn.reply, call_id, kind, out)


class Runtime:
    """One loaded handler, served to any number of host connections."""

    def __init__(self, handler: str, mode: str, threads: int = DEFAULT_THREADS) -> None:
        if mode not in ("payload", "envelope"):
            raise LoadError(f"ASYA_HANDLER_MODE must be payload or envelope, got {mode!r}")
        parts = handler.split(".")
        if len(parts) < 2:
            raise LoadError(f"ASYA_HANDLER {handler!r} is not 'module.func'")
        self.reference = handler
        self.mode = mode
        self.fn = self._load(parts)
        self.is_async = asyncio.iscoroutinefunction(self.fn)
        self.workers = Workers(self.fn, threads)

    def _load(self, parts: list[str]) -> Any:
        # `module.Class.method` when the second-to-last part names a class, else `module.func`.
        module, attr = ".".join(parts[:-1]), parts[-1]
        try:
            return load_handler(self.reference, module, None, attr)
        except LoadError:
            if len(parts) < 3:
                raise
        return load_handler(self.reference, ".".join(parts[:-2]), parts[-2], parts[-1])

    def hello(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL,
            "handler": self.reference,
            "mode": self.mode,
            "sdk_version": __version__,
            "concurrency": "async" if self.is_async else "threads",
        }

    def start(self, conn: Connection, call_id: int, body: bytes) -> None:
        if self.is_async:
            conn.tasks[call_id] = conn.loop.create_task(self.run_async(conn, call_id, body))
        else:
            self.workers.submit(conn, call_id, body)

    async def run_async(self, conn: Connection, call_id: int, body: bytes) -> None:
        try:
            kind, out = outcome(await call_async(self.fn, decode(body)))
        except HandlerFailure as failure:
            kind, out = error(failure)
        if conn.tasks.pop(call_id, None) is not None:
            conn.reply(call_id, kind, out)


async def serve(runtime: Runtime, socket_path: str) -> None:
    directory = os.path.dirname(socket_path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: Connection(runtime), path=socket_path)
    print(
        f"asya runtime: {runtime.reference} ({runtime.mode}) ready on {socket_path}",
        file=sys.stderr,
        flush=True,
    )
    async with server:
        await server.serve_forever()


def main() -> int:
    handler = os.environ.get("ASYA_HANDLER")
    if not handler:
        print("asya runtime: ASYA_HANDLER is not set", file=sys.stderr)
        return 2
    source = os.environ.get("ASYA_SOURCE_DIR", os.getcwd())
    sys.path.insert(0, source)
    try:
        threads = int(os.environ.get("ASYA_RUNTIME_THREADS", DEFAULT_THREADS))
        runtime = Runtime(handler, os.environ.get("ASYA_HANDLER_MODE", "payload"), threads)
    except (LoadError, ValueError) as exc:
        print(f"asya runtime: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(runtime, os.environ.get("ASYA_RUNTIME_SOCKET", DEFAULT_SOCKET)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
