"""Inside a component only: outbound HTTP through `wasi:http`, and naming sandbox refusals.

Copied into every component as `_asya_sandbox` and imported by the adapter at build time. It
installs a `urllib.request` opener whose HTTP and HTTPS handlers speak `wasi:http`, so a plain
handler's `urllib.request.urlopen(...)` works for the hosts its manifest grants in
`sandbox.allowedHosts`. The host refuses every other request; that refusal is raised here as
`SandboxDenied` (a `urllib.error.URLError`, so `except URLError` still catches it).

`denial()` tells the adapter whether a handler's failure came from the sandbox refusing something
(a file, a socket, a host) so the host reports it with reason `SandboxDenied`.

Not imported by the native runtime: there a handler has the real network and filesystem.
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401  (snapshotted: host-name lookups need it at run time)
import errno
import http.client
import io
import socket
import urllib.error
import urllib.request
import urllib.response
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import outgoing_handler, streams

try:
    from wit_world.imports import wasi_http_types as wasi_http
except ImportError:  # the `actor-async` world imports two wasi:http versions: names say which
    from wit_world.imports import wasi_http_types_0_2_12 as wasi_http

__all__ = ["FORBIDDEN_HEADERS", "SandboxDenied", "denial", "install", "send", "wasi_method"]

# wasi:http refuses these request headers (hop-by-hop ones the host sets itself).
FORBIDDEN_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host",
     "http2-settings", "te", "proxy-authenticate", "proxy-authorization"}
)  # fmt: skip
# `blocking-write-and-flush` takes at most this many bytes per call.
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024
# errno values a sandboxed libc reports for operations WASI does not grant.
_DENIED_ERRNOS = frozenset(
    e for e in (getattr(errno, n, None) for n in
                ("EACCES", "EPERM", "ENOTCAPABLE", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"))
    if e is not None
)  # fmt: skip


class SandboxDenied(urllib.error.URLError):
    """The sandbox refused an outbound request: its host is not in the actor's
    `sandbox.allowedHosts`."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(
            f"outbound HTTP to {url} is not allowed: add its host to the actor's "
            "sandbox.allowedHosts"
        )

    def __str__(self) -> str:
        return str(self.reason)


# asya's own error, named like the host's failure kinds (Timeout, MemoryLimit): `error.type` is
# `SandboxDenied` (not the module this file has inside a component), its MRO
# `urllib.error.URLError`, `OSError`, `Exception`.
SandboxDenied.__module__ = "builtins"


def wasi_method(name: str, types: Any = wasi_http) -> object:
    """The `method` variant of wasi:http `types` (0.2's by default; `asya.guest_async` passes
    0.3's, whose variants have the same names) for HTTP method `name`."""
    known = {
        "GET": types.Method_Get, "HEAD": types.Method_Head,
        "POST": types.Method_Post, "PUT": types.Method_Put,
        "DELETE": types.Method_Delete, "OPTIONS": types.Method_Options,
        "PATCH": types.Method_Patch, "TRACE": types.Method_Trace,
        "CONNECT": types.Method_Connect,
    }  # fmt: skip
    kind = known.get(name.upper())
    return kind() if kind is not None else types.Method_Other(name)


def _error_text(code: object) -> str:
    name = type(code).__name__.removeprefix("ErrorCode_")
    value = getattr(code, "value", None)
    return f"{name}: {value}" if value is not None else name


def _fail(url: str, code: object) -> urllib.error.URLError:
    if isinstance(code, wasi_http.ErrorCode_HttpRequestDenied):
        return SandboxDenied(url)
    return urllib.error.URLError(f"HTTP request to {url} failed ({_error_text(code)})")


def send(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes | None = None,
    timeout: float | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Sends one request through `wasi:http`; returns status, headers and the whole body."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise urllib.error.URLError(f"unsupported URL {url!r}: only http:// and https://")
    authority = parts.netloc.rpartition("@")[2]
    entries = [
        (name.lower(), value.encode("latin-1"))
        for name, value in headers
        if name.lower() not in FORBIDDEN_HEADERS
    ]
    request = wasi_http.OutgoingRequest(wasi_http.Fields.from_list(entries))
    request.set_method(wasi_method(method))
    request.set_scheme(wasi_http.Scheme_Https() if scheme == "https" else wasi_http.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    options = None
    if timeout is not None and timeout > 0:
        nanos = int(timeout * 1e9)
        options = wasi_http.RequestOptions()
        setters = (
            options.set_connect_timeout,
            options.set_first_byte_timeout,
            options.set_between_bytes_timeout,
        )
        for setter in setters:
            # A host without this timeout refuses it; the actor's deadline still holds.
            with contextlib.suppress(Err):
                setter(nanos)
    outgoing = request.body()
    try:
        future = outgoing_handler.handle(request, options)
    except Err as err:
        raise _fail(url, err.value) from None
    if body:
        with outgoing.write() as stream:
            for start in range(0, len(body), _WRITE_CHUNK):
                stream.blocking_write_and_flush(body[start : start + _WRITE_CHUNK])
    wasi_http.OutgoingBody.finish(outgoing, None)
    with future:
        with future.subscribe() as ready:
            ready.block()
        outcome = future.get()
    if outcome is None or isinstance(outcome, Err):
        raise urllib.error.URLError(f"HTTP request to {url} failed: no response")
    result = outcome.value
    if isinstance(result, Err):
        raise _fail(url, result.value)
    with result.value as response:
        status = response.status()
        with response.headers() as fields:
            received = [(k, v.decode("latin-1")) for k, v in fields.entries()]
        incoming = response.consume()
        chunks = []
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(_READ_CHUNK))
                except Err as err:
                    if isinstance(err.value, streams.StreamError_Closed):
                        break
                    raise urllib.error.URLError(f"HTTP response from {url} was cut off") from None
        with wasi_http.IncomingBody.finish(incoming):
            pass
    return status, received, b"".join(chunks)


class WasiHTTPHandler(urllib.request.HTTPHandler):
    """`urllib.request` handler for http:// and https:// over `wasi:http`."""

    # urllib returns whatever a handler opens; typeshed has HTTPHandler open only HTTPResponse.
    def http_open(self, req: urllib.request.Request) -> urllib.response.addinfourl:  # type: ignore[override]
        return self._open(req)

    def https_open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        return self._open(req)

    https_request = urllib.request.AbstractHTTPHandler.do_request_

    def _open(self, req: urllib.request.Request) -> urllib.response.addinfourl:
        data = req.data  # bytes, a bytes-like object, a file object or an iterable of bytes
        if data is None or isinstance(data, bytes):
            body_out = data
        elif isinstance(data, bytearray | memoryview):
            body_out = bytes(data)
        elif hasattr(data, "read"):
            body_out = data.read()
        elif isinstance(data, Iterable):
            body_out = b"".join(data)
        else:
            body_out = bytes(data)  # another bytes-like object
        status, headers, body = send(
            req.get_method(), req.full_url, list(req.header_items()), body_out, req.timeout
        )
        message = http.client.HTTPMessage()
        for name, value in headers:
            message[name] = value
        response = urllib.response.addinfourl(io.BytesIO(body), message, req.full_url, status)
        response.msg = http.client.responses.get(status, "")  # type: ignore[attr-defined]
        return response


def install() -> None:
    """Makes `urllib.request.urlopen` use `wasi:http` (called once, at build time)."""
    urllib.request.install_opener(urllib.request.build_opener(WasiHTTPHandler))


def denial(exc: BaseException | None) -> str | None:
    """What the sandbox refused, if that is why `exc` was raised; else `None`.

    A component has no filesystem and no sockets at all, so any OS error about a path or a socket
    is the sandbox's refusal; an outbound request is refused when its host is not granted.
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, SandboxDenied):
            return str(exc)
        if isinstance(exc, OSError) and not isinstance(exc, urllib.error.URLError):
            if exc.filename is not None:
                return f"filesystem access to {exc.filename!r} (the sandbox has no filesystem)"
            if isinstance(exc, (socket.gaierror, socket.herror)):
                return f"host-name lookup ({exc}; the sandbox grants no network)"
            if exc.errno in _DENIED_ERRNOS:
                return f"{exc.strerror or exc} (the sandbox grants no sockets or devices)"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
