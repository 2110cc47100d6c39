"""The native-Python runtime: `python -m asya.runtime`, for handlers that cannot be WASM (torch,
CUDA, C extensions). Standard library only, so it can be dropped into any user image.

It loads `ASYA_HANDLER` with exactly the rules of the WASM build (`asya.handling` is the same
code) and serves the asya host over a Unix socket. The host applies all sidecar logic (routing,
retries, timeouts, metrics); this process only runs the handler.

Environment:
  ASYA_HANDLER          `module.func` or `module.Class.method` (required)
  ASYA_HANDLER_MODE     `payload` (default) or `envelope`
  ASYA_RUNTIME_SOCKET   socket path (default /var/run/asya/runtime.sock)
  ASYA_SOURCE_DIR       directory put first on sys.path (default: the working directory)

Protocol `asya-runtime/1` (stream socket; every frame is a 4-byte big-endian length, then that
many bytes of UTF-8 JSON):
  runtime → host, once per connection:
      {"protocol": "asya-runtime/1", "handler": str, "mode": "payload"|"envelope",
       "sdk_version": str}
  host → runtime:   {"id": int, "input": str}          input: JSON text (payload or envelope)
  runtime → host:   {"id": int, "ok": str}              the handler's result as JSON text
                    {"id": int, "none": true}           the handler returned None
                    {"id": int, "error": {"type", "message", "mro_names", "traceback"}}
One request at a time per connection; the host opens as many connections as it wants messages
in flight. All handlers share one event loop: `async def` handlers run on it, plain functions
run in a worker thread so the loop stays responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import sys
from typing import Any

from . import __version__
from .handling import (
    HandlerFailure,
    LoadError,
    call,
    call_async,
    encode_result,
    load_handler,
    type_error,
)

PROTOCOL = "asya-runtime/1"
DEFAULT_SOCKET = "/var/run/asya/runtime.sock"
MAX_FRAME = 256 << 20


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    try:
        header = await reader.readexactly(4)
    except asyncio.IncompleteReadError:
        return None
    (length,) = struct.unpack(">I", header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    frame: dict[str, Any] = json.loads(await reader.readexactly(length))
    return frame


def write_frame(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    data = json.dumps(message, ensure_ascii=False).encode()
    writer.write(struct.pack(">I", len(data)) + data)


class Runtime:
    """One loaded handler, served to any number of host connections."""

    def __init__(self, handler: str, mode: str) -> None:
        if mode not in ("payload", "envelope"):
            raise LoadError(f"ASYA_HANDLER_MODE must be payload or envelope, got {mode!r}")
        parts = handler.split(".")
        if len(parts) < 2:
            raise LoadError(f"ASYA_HANDLER {handler!r} is not 'module.func'")
        self.reference = handler
        self.mode = mode
        self.fn = self._load(parts)
        self.is_async = asyncio.iscoroutinefunction(self.fn)

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
        }

    async def run_one(self, text: str) -> dict[str, Any]:
        try:
            data = json.loads(text)
        except ValueError as exc:
            return {"error": type_error(f"input is not JSON: {exc}").fields}
        try:
            if self.is_async:
                result = await call_async(self.fn, data)
            else:
                result = await asyncio.to_thread(call, self.fn, data)
            encoded = encode_result(result)
        except HandlerFailure as failure:
            return {"error": failure.fields}
        return {"none": True} if encoded is None else {"ok": encoded}

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        write_frame(writer, self.hello())
        await writer.drain()
        try:
            while (request := await read_frame(reader)) is not None:
                response = await self.run_one(request["input"])
                response["id"] = request["id"]
                write_frame(writer, response)
                await writer.drain()
        except (ConnectionError, ValueError, KeyError) as exc:
            print(f"asya runtime: dropping a connection: {exc}", file=sys.stderr)
        finally:
            writer.close()


async def serve(runtime: Runtime, socket_path: str) -> None:
    directory = os.path.dirname(socket_path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server = await asyncio.start_unix_server(runtime.serve_connection, path=socket_path)
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
        runtime = Runtime(handler, os.environ.get("ASYA_HANDLER_MODE", "payload"))
    except LoadError as exc:
        print(f"asya runtime: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(runtime, os.environ.get("ASYA_RUNTIME_SOCKET", DEFAULT_SOCKET)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
