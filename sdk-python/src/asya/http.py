"""`asya.http`: awaitable outbound HTTP for `async def` handlers, the same on both runtimes.

The one asya import a handler may make, and only an `async def` handler needs it: the standard
library has no asyncio HTTP client, and `urllib.request` blocks (in a WASM instance that runs many
calls at once it would stall all of them while it waits). Standard library only.

    import asya.http

    async def judge(payload: dict) -> dict:
        reply = await asya.http.post(
            "https://llm.example.com/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": payload["text"]}]},
            headers={"authorization": f"Bearer {os.environ['LLM_API_KEY']}"},
            timeout=30,
        )
        return {**payload, "verdict": reply.raise_for_status().json()["choices"][0]}

Inside a WASM component it sends through `wasi:http` 0.3, and the host lets a request out only to
the hosts of the actor's `sandbox.allowedHosts` (any other raises `SandboxDenied`, reported with
reason `SandboxDenied`). In the native runtime it is a small HTTP/1.1 client on asyncio streams
(TLS from `ssl`'s default context), one connection per request.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["HTTPError", "HTTPStatusError", "Response", "get", "post", "request"]

try:  # Inside an `async def` component: the wasi:http 0.3 backend the build puts beside it.
    import _asya_async as _component
except ImportError:
    _component = None  # the native runtime (or a plain function's component)

_MAX_HEADER_LINE = 64 * 1024


class HTTPError(Exception):
    """The request did not get a response: refused, unreachable, timed out or cut off."""


class HTTPStatusError(HTTPError):
    """`raise_for_status()` on a response whose status is 400 or more."""

    def __init__(self, response: Response) -> None:
        self.response = response
        super().__init__(f"HTTP {response.status}: {response.text()[:200]}")


@dataclass(frozen=True)
class Response:
    """A whole response: status, headers (names lower-case, in order) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of header `name` (any case), or `None`."""
        wanted = name.lower()
        found = None
        for key, value in self.headers:
            if key == wanted:
                found = value
        return found

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def raise_for_status(self) -> Response:
        """This response, or `HTTPStatusError` if its status is 400 or more."""
        if self.status >= 400:
            raise HTTPStatusError(self)
        return self


async def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
    json: Any = None,
    timeout: float | None = None,
) -> Response:
    """Sends one request and returns the whole response. `json` is sent as the body (with
    `content-type: application/json`); `timeout` bounds the whole exchange, in seconds."""
    fields = [(k.lower(), v) for k, v in (headers or {}).items()]
    if json is not None:
        if body is not None:
            raise TypeError("give body or json, not both")
        body = jsonlib.dumps(json, separators=(",", ":"))
        if not any(k == "content-type" for k, _ in fields):
            fields.append(("content-type", "application/json"))
    data = body.encode() if isinstance(body, str) else body
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPError(f"unsupported URL {url!r}: only http:// and https://")
    if _component is not None:
        send = _component.send(method.upper(), url, fields, data, timeout)
    elif sys.platform == "wasi":
        raise HTTPError(
            "asya.http awaits, so it needs an `async def` handler; a plain function uses "
            "urllib.request"
        )
    else:
        send = _send_native(method.upper(), url, fields, data)
    try:
        if timeout is None:
            status, received, content = await send
        else:
            status, received, content = await asyncio.wait_for(send, timeout)
    except TimeoutError:
        raise HTTPError(f"HTTP request to {url} timed out after {timeout} s") from None
    return Response(status, received, content)


async def get(url: str, **kwargs: Any) -> Response:
    """`request("GET", url, ...)`."""
    return await request("GET", url, **kwargs)


async def post(url: str, **kwargs: Any) -> Response:
    """`request("POST", url, ...)`."""
    return await request("POST", url, **kwargs)


async def _send_native(
    method: str, url: str, headers: list[tuple[str, str]], body: bytes | None
) -> tuple[int, list[tuple[str, str]], bytes]:
    import ssl  # here: a component's CPython has no _ssl (its TLS is the host's)

    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ssl.create_default_context() if https else None
        )
    except OSError as exc:
        raise HTTPError(f"HTTP request to {url} failed: {exc}") from None
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"host: {parts.netloc.rpartition('@')[2]}"]
        lines += [f"{k}: {v}" for k, v in headers if k not in ("host", "content-length")]
        lines += [f"content-length: {len(body or b'')}", "connection: close", "", ""]
        writer.write("\r\n".join(lines).encode("latin-1") + (body or b""))
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HTTPError(f"HTTP response from {url} is not HTTP: {status_line[:80]!r}") from None
        received: list[tuple[str, str]] = []
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            if len(line) > _MAX_HEADER_LINE:
                raise HTTPError(f"HTTP response from {url} has a header line over 64 KiB")
            name, _, value = line.decode("latin-1").partition(":")
            received.append((name.strip().lower(), value.strip()))
        fields = dict(received)
        if "chunked" in fields.get("transfer-encoding", "").lower():
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            content = b"".join(chunks)
        elif "content-length" in fields:
            content = await reader.readexactly(int(fields["content-length"]))
        else:
            content = await reader.read()
        return status, received, content
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
        raise HTTPError(f"HTTP response from {url} was cut off: {exc}") from None
    finally:
        writer.close()
