"""Inside an `async def` component only: asyncio timers on WASI 0.3 clocks, and awaitable
outbound HTTP through `wasi:http` 0.3 for `asya.http`.

Copied into every component of the `actor-async` world as `_asya_async` and imported by its
adapter at build time. componentize-py's event loop runs each call of the async `handle` export
as a component-model task; it leaves timers unimplemented, so `install()` gives it `time`,
`call_later` and `call_at` on `monotonic-clock.wait-for` (then `asyncio.sleep`, `wait_for` and
`timeout` work). A timer is a task of the call that set it, as `componentize_py_async_support.spawn`
makes them: the call's component-model task ends only after its timers fired or were cancelled.

Not imported by the native runtime: there asyncio has its own loop and `asya.http` its own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import componentize_py_async_support as support
import wit_world
from _asya_sandbox import FORBIDDEN_HEADERS, SandboxDenied, wasi_method
from componentize_py_types import Err, Ok
from wit_world.imports import client
from wit_world.imports import wasi_clocks_monotonic_clock_0_3_0 as clock
from wit_world.imports import wasi_http_types_0_3_0 as wasi_http

__all__ = ["install", "send"]

_READ_CHUNK = 64 * 1024


def _time(loop: Any) -> float:
    nanos: int = clock.now()
    return nanos / 1e9


def _call_later(
    loop: Any,
    delay: float,
    callback: Callable[..., object],
    *args: Any,
    context: contextvars.Context | None = None,
) -> asyncio.TimerHandle:
    if context is None:
        context = contextvars.copy_context()
    handle = asyncio.TimerHandle(_time(loop) + max(0.0, delay), callback, args, loop, context)

    async def fire() -> None:
        await clock.wait_for(max(0, int(delay * 1e9)))
        if not handle.cancelled():
            handle._run()

    context.run(support.spawn, fire())
    return handle


def _call_at(
    loop: Any,
    when: float,
    callback: Callable[..., object],
    *args: Any,
    context: contextvars.Context | None = None,
) -> asyncio.TimerHandle:
    return _call_later(loop, when - _time(loop), callback, *args, context=context)


def _timer_cancelled(loop: Any, handle: asyncio.TimerHandle) -> None:
    # A cancelled timer's task still waits out its clock, then finds the handle cancelled.
    pass


def install() -> None:
    """Gives componentize-py's event loop timers (called once, at build time)."""
    loop_class: Any = support._Loop
    loop_class.time = _time
    loop_class.call_later = _call_later
    loop_class.call_at = _call_at
    loop_class._timer_handle_cancelled = _timer_cancelled


def _failure(url: str, code: object) -> Exception:
    import asya.http

    if isinstance(code, wasi_http.ErrorCode_HttpRequestDenied):
        denied: Exception = SandboxDenied(url)
        return denied
    name = type(code).__name__.removeprefix("ErrorCode_")
    value = getattr(code, "value", None)
    detail = f"{name}: {value}" if value is not None else name
    return asya.http.HTTPError(f"HTTP request to {url} failed ({detail})")


def _trailers() -> Any:
    name = "result_option_wasi_http_types_0_3_0_fields_wasi_http_types_0_3_0_error_code_future"
    return wit_world.__dict__[name](lambda: Ok(None))[1]


def _done() -> Any:
    return wit_world.result_unit_wasi_http_types_0_3_0_error_code_future(lambda: Ok(None))[1]


async def send(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    timeout: float | None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Sends one request through `wasi:http` 0.3; returns status, headers and the whole body."""
    parts = urlsplit(url)
    entries = [
        (name, value.encode("latin-1")) for name, value in headers if name not in FORBIDDEN_HEADERS
    ]
    writer = None
    contents = None
    if body:
        writer, contents = wit_world.byte_stream()
    options = None
    if timeout is not None and timeout > 0:
        options = wasi_http.RequestOptions()
        for setter in (options.set_connect_timeout, options.set_first_byte_timeout):
            # A host without this timeout refuses it; `asya.http`'s own timeout still holds.
            with contextlib.suppress(Err):
                setter(int(timeout * 1e9))
    # `transmitted` resolves once the body is sent; it is held (not dropped) until the response
    # is read: dropping it early can cut the body off under load.
    request, transmitted = wasi_http.Request.new(
        wasi_http.Fields.from_list(entries), contents, _trailers(), options
    )
    request.set_method(wasi_method(method, wasi_http))
    request.set_scheme(
        wasi_http.Scheme_Https() if parts.scheme == "https" else wasi_http.Scheme_Http()
    )
    request.set_authority(parts.netloc.rpartition("@")[2])
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))

    async def write_body() -> None:
        # Never raises: an exception left in a task nobody awaits would reach componentize-py's
        # exception handler, which traps the instance (every call in it). A body the host
        # stopped reading shows as the request's own error.
        if writer is not None and body:
            with contextlib.suppress(Exception), writer:
                await writer.write_all(body)

    # The body is written while the request is sent (the host reads it as it goes).
    writing = asyncio.ensure_future(write_body()) if writer is not None else None
    try:
        response = await client.send(request)
    except Err as err:
        raise _failure(url, err.value) from None
    finally:
        if writing is not None:
            await writing
    status = response.get_status_code()
    received = [(k.lower(), v.decode("latin-1")) for k, v in response.get_headers().copy_all()]
    reader, _trailers_future = wasi_http.Response.consume_body(response, _done())
    chunks = []
    with reader:
        while not reader.writer_dropped:
            chunks.append(await reader.read(_READ_CHUNK))
    del transmitted
    return status, received, b"".join(chunks)
