"""How a handler is loaded and called: the one implementation shared by the WASM adapter (copied
into every component as `_asya_handling`) and the native runtime (`python -m asya.runtime`), so
the two paths cannot drift apart. Standard library only.
"""

from __future__ import annotations

import importlib
import inspect
import json
import json.encoder
import json.scanner
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

#: Marker in front of load-time errors, so `asya build` can show them plainly.
BUILD_ERROR_MARKER = "ASYA_BUILD_ERROR: "


class LoadError(Exception):
    """The handler cannot be loaded; the message says why."""


class HandlerFailure(Exception):
    """A call failed; `fields` is the error record (type, message, mro_names, traceback): see
    `error_type_name` and `mro_names` for how classes are named."""

    def __init__(
        self,
        kind: str,
        message: str,
        mro_names: list[str],
        trace: str,
        original: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.fields = {"type": kind, "message": message, "mro_names": mro_names, "traceback": trace}
        #: The handler's own exception, when there was one.
        self.original = original


def _fail(message: str) -> NoReturn:
    raise LoadError(BUILD_ERROR_MARKER + message)


def load_handler(reference: str, module: str, cls: str | None, func: str) -> Callable[..., Any]:
    """Imports `module` and returns the handler callable. A class is constructed here, once,
    with no arguments; every `__init__` parameter must have a default."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        _fail(f"handler {reference!r}: cannot import {exc.name!r}: {exc}")
    if cls is None:
        fn: object = getattr(mod, func, None)
        if not callable(fn):
            _fail(f"handler {reference!r}: module {module!r} has no function {func!r}")
        return fn
    klass = getattr(mod, cls, None)
    if not isinstance(klass, type):
        _fail(f"handler {reference!r}: module {module!r} has no class {cls!r}")
    for name, param in inspect.signature(klass).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.default is param.empty:
            _fail(
                f"handler {reference!r}: {cls}.__init__ parameter {name!r} has no default; "
                "the class is constructed once with no arguments"
            )
    instance = klass()
    method: object = getattr(instance, func, None)
    if not callable(method):
        _fail(f"handler {reference!r}: class {cls!r} has no method {func!r}")
    return method


def split_reference(reference: str, cls_given: bool) -> tuple[str, str | None, str]:
    """`module.func` or `module.Class.method` (dotted module paths allowed)."""
    parts = reference.split(".")
    if cls_given:
        return ".".join(parts[:-2]), parts[-2], parts[-1]
    return ".".join(parts[:-1]), None, parts[-1]


#: An exception carrying this attribute (a dict with `type`, `message`, `mro`, `traceback`) is
#: reported with that record instead of its own class: how a flow router re-raises the error of
#: an actor (`raise` in an `except` clause, the end of a `finally`) as that error.
ERROR_RECORD_ATTR = "_asya_error"


def error_type_name(cls: type) -> str:
    """A class as Asya writes it in `error.type` and `error.mro`: the bare name for builtins
    (`ValueError`), `module.Qualname` for every other class (`requests.exceptions.HTTPError`,
    `handlers.MyError`)."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None) or cls.__name__
    if not module or module == "builtins":
        return str(qualname)
    return f"{module}.{qualname}"


def mro_names(cls: type) -> list[str]:
    """The bases of an exception class, nearest first, without the class itself, `object` and
    `BaseException` (`KeyError` -> `["LookupError", "Exception"]`)."""
    return [error_type_name(c) for c in cls.__mro__[1:] if c not in (BaseException, object)]


def failure(exc: BaseException, skip_frames: int = 1) -> HandlerFailure:
    """The error record of an exception raised by the handler (skipping our own frames)."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    record = getattr(exc, ERROR_RECORD_ATTR, None)
    if isinstance(record, dict) and record.get("type"):
        return HandlerFailure(
            str(record["type"]),
            str(record.get("message") or ""),
            [str(m) for m in record.get("mro") or []],
            str(record.get("traceback") or text),
            exc,
        )
    return HandlerFailure(error_type_name(type(exc)), str(exc), mro_names(type(exc)), text, exc)


def type_error(message: str) -> HandlerFailure:
    return HandlerFailure("TypeError", message, mro_names(TypeError), "")


def _fast_json() -> tuple[Callable[[str, int], tuple[Any, int]], Callable[[Any], str] | None]:
    """The json module's C scanner and encoder, set up once: `json.loads`/`json.dumps` rebuild
    them (and an encoder object, for non-default options) on every call, which costs more than
    the parsing itself for the small payloads of a pipeline hop. The encoder is used only if it
    writes exactly what `json.dumps` would; otherwise (another Python) `json.dumps` is."""
    # typeshed has make_scanner take a scanner; it takes the decoder whose options it copies.
    decoder: Any = json.JSONDecoder()
    scan_once = json.scanner.make_scanner(decoder)
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:
        return scan_once, None
    default = json.JSONEncoder().default
    escape = json.encoder.encode_basestring
    # One encoder for every call (making one parses nine arguments, a tenth of a small call).
    # Its markers dict detects circular references; an encode that stopped half-way (an
    # unserialisable value) can leave entries behind, so it is emptied before each use.
    markers: dict[int, Any] = {}
    encoder = make_encoder(markers, default, escape, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        markers.clear()
        return "".join(encoder(value, 0))

    sample = {"s": 'ü\n"', "i": [1, -2, 3.5, 1e300, True, None], "d": {"k": {}}, 7: []}
    try:
        same = encode(sample) == _dumps(sample)
    except Exception:  # any incompatibility means: use json.dumps
        same = False
    return scan_once, encode if same else None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


_scan_once, _encode = _fast_json()


def parse_input(text: str) -> Any:
    try:
        value, end = _scan_once(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    # Whitespace around the document, or not JSON: the full parser decides (and explains).
    try:
        return json.loads(text)
    except ValueError as exc:
        raise type_error(f"input is not JSON: {exc}") from None


def drive(coroutine: Any) -> Any:
    """Runs a coroutine that never awaits real I/O to completion (the WASM runtime has no event
    loop); anything awaiting I/O is reported."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise TypeError(
        "async handler awaited something that needs an event loop; "
        "use runtime: python for handlers that await I/O"
    )


def call(handler: Callable[..., Any], data: Any) -> Any:
    """Calls the handler; a coroutine result is driven to completion without an event loop."""
    try:
        result = handler(data)
        if inspect.iscoroutine(result):
            result = drive(result)
        return result
    except BaseException as exc:  # the handler's failure, whatever it is, is reported
        raise failure(exc, skip_frames=1) from None


async def call_async(handler: Callable[..., Any], data: Any) -> Any:
    """Calls the handler on the running event loop (native runtime)."""
    try:
        result = handler(data)
        if inspect.isawaitable(result):
            result = await result
        return result
    except BaseException as exc:  # the handler's failure, whatever it is, is reported
        raise failure(exc, skip_frames=1) from None


def encode_result(result: Any) -> str | None:
    """`None` stays `None`; a dict becomes JSON text; anything else is a TypeError."""
    if result is None:
        return None
    if not isinstance(result, dict):
        raise type_error(f"handler returned {type(result).__name__}, expected a dict or None")
    try:
        return _encode(result) if _encode is not None else _dumps(result)
    except (TypeError, ValueError) as exc:
        raise type_error(f"handler result is not JSON-serialisable: {exc}") from None
