"""The guest's JSON fast path writes and reads exactly what the json module does, and fails the
same way."""

import json
from typing import Any

import pytest

from asya import handling


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def test_the_fast_encoder_is_in_use_and_writes_what_json_dumps_writes() -> None:
    assert handling._encode is not None, "CPython's C encoder is available here"
    for value in [
        {},
        {"text": 'héllo "wörld"\n\t\u2028', "n": -3, "f": 2.5, "big": 10**30},
        {"nested": {"list": [1, None, True, {"k": []}]}, 7: "int key", "e": 1e-300},
    ]:
        assert handling.encode_result(value) == _dumps(value)


def test_encoding_again_after_a_failure_is_unaffected() -> None:
    inner: dict[str, Any] = {"when": object()}
    with pytest.raises(handling.HandlerFailure, match="not JSON-serialisable"):
        handling.encode_result({"a": [inner]})
    # The same dict again, now valid: a marker left from the failed encode would report it as
    # a circular reference.
    inner["when"] = "now"
    assert handling.encode_result({"b": inner}) == '{"b":{"when":"now"}}'


def test_circular_references_and_nan_are_reported() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(handling.HandlerFailure, match="Circular reference") as caught:
        handling.encode_result(loop)
    assert caught.value.fields["type"] == "TypeError"
    with pytest.raises(handling.HandlerFailure, match="not JSON-serialisable"):
        handling.encode_result({"x": float("nan")})
    assert handling.encode_result({"ok": True}) == '{"ok":true}'


def test_parse_input_reads_json_and_explains_what_is_not() -> None:
    assert handling.parse_input('{"a":[1,2.5,"é"]}') == {"a": [1, 2.5, "é"]}
    assert handling.parse_input(' {"padded": 1} ') == {"padded": 1}
    with pytest.raises(handling.HandlerFailure, match="input is not JSON"):
        handling.parse_input("{not json")


class MyError(ValueError):
    """A handler's own error class (module `handlers` in the test below)."""


def _record(exc: BaseException) -> dict[str, Any]:
    try:
        raise exc
    except BaseException as raised:
        return handling.failure(raised, skip_frames=0).fields


def test_error_type_and_mro_are_written_as_asya_writes_them() -> None:
    import requests

    MyError.__module__ = "handlers"
    try:
        builtin = _record(ValueError("v"))
        mine = _record(MyError("m"))
        http = _record(requests.exceptions.HTTPError("h"))
        key = _record(KeyError("k"))
    finally:
        MyError.__module__ = __name__
    assert (builtin["type"], builtin["mro_names"]) == ("ValueError", ["Exception"])
    assert (mine["type"], mine["mro_names"]) == ("handlers.MyError", ["ValueError", "Exception"])
    assert http["type"] == "requests.exceptions.HTTPError"
    assert http["mro_names"] == ["requests.exceptions.RequestException", "OSError", "Exception"]
    assert (key["type"], key["mro_names"]) == ("KeyError", ["LookupError", "Exception"])
    assert mine["message"] == "m" and "MyError: m" in mine["traceback"]


def test_nested_classes_keep_their_qualname_and_base_exception_subclasses_work() -> None:
    class Outer:
        class Inner(Exception):
            pass

    record = _record(Outer.Inner("x"))
    assert record["type"] == f"{__name__}.{Outer.Inner.__qualname__}"
    assert record["type"].endswith("Outer.Inner")
    assert record["mro_names"] == ["Exception"]
    assert _record(KeyboardInterrupt())["mro_names"] == []
    assert handling.type_error("t").fields["mro_names"] == ["Exception"]


def test_a_carried_error_record_is_reported_as_that_error() -> None:
    exc = RuntimeError("wrapper")
    setattr(
        exc,
        handling.ERROR_RECORD_ATTR,
        {"type": "handlers.MyError", "message": "original", "mro": ["ValueError", "Exception"]},
    )
    record = _record(exc)
    assert record["type"] == "handlers.MyError"
    assert record["message"] == "original"
    assert record["mro_names"] == ["ValueError", "Exception"]
    assert "RuntimeError: wrapper" in record["traceback"]


def test_the_sandbox_refusal_is_named_like_a_host_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import sys
    import types

    # The module imports the component's bindings; stand-ins are enough to define the class.
    bindings = types.ModuleType("bindings")
    for name in ("componentize_py_types", "wit_world", "wit_world.imports"):
        monkeypatch.setitem(sys.modules, name, bindings)
    for attr in ("Err", "outgoing_handler", "streams", "wasi_http_types"):
        setattr(bindings, attr, None)
    monkeypatch.delitem(sys.modules, "asya.guest_sandbox", raising=False)
    sandbox = importlib.import_module("asya.guest_sandbox")
    monkeypatch.delitem(sys.modules, "asya.guest_sandbox")
    record = _record(sandbox.SandboxDenied("http://example.com/"))
    assert record["type"] == "SandboxDenied"
    assert record["mro_names"] == ["urllib.error.URLError", "OSError", "Exception"]
