"""The oracle for compiled flows: a flow file is plain Python, so running the flow function
natively, with the same stub handlers the routers call as actors, gives the final payload (or the
error) each input must end with. Used by the unit tests (in-process mesh) and the end-to-end tests
(real host)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from asya.flow.compiler import kebab
from asya.handling import error_type_name

ASYA_FLOWS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "asya-flows"

#: (flow file, flow, payloads): every path of each flow; the end-to-end tests run the same.
ASYA_CASES: list[tuple[str, str, list[dict[str, Any]]]] = [
    (
        "text_analysis_flow.py",
        "text_analysis_flow",
        [
            {"text": "  A GOOD product overall "},
            {"text": "el producto es bueno"},
            {"text": "ça va très bien"},
        ],
    ),
    ("sample_flow.py", "sample_flow", [{"type": "A", "text": "hello"}, {"type": "B", "text": "x"}]),
    ("constructs.py", "typed_dict_flow", [{"q": "  short  "}, {"q": " a much longer question "}]),
    ("constructs.py", "dataclass_flow", [{"text": "go", "target": 2}, {"text": "go"}, {}]),
    (
        "constructs.py",
        "fanout_flow",
        [
            {"text": "good good day", "n": 0, "items": [1, 2]},
            {"text": "a b c d", "n": 2, "items": [1, 2, 3]},
            {"text": "", "n": 1, "items": []},
        ],
    ),
    (
        "constructs.py",
        "research_flow",
        [{"q": "why", "topics": ["a", "bc"]}, {"q": "", "topics": []}],
    ),
    (
        "constructs.py",
        "errors_flow",
        [
            {"raise": None, "items": ["a", "skip", "b", "stop", "c"]},
            {"raise": "key", "items": ["a"]},
            {"raise": "key", "stop": True},
            {"raise": "value"},
            {"raise": "custom"},
            {"raise": None, "stop": True},
        ],
    ),
]


class _Ready(dict):  # type: ignore[type-arg]
    """A handler's result in an async flow: a dict that can also be awaited (`await f(p)`,
    `asyncio.gather(f(a), g(b))`), as an async handler's coroutine would be."""

    def __hash__(self) -> int:  # asyncio.gather keys its arguments
        return id(self)

    def __await__(self) -> Generator[Any, None, Any]:
        if False:  # pragma: no cover - makes this a generator
            yield
        return self


def load(path: Path, name: str, environ: Mapping[str, str] | None = None) -> ModuleType:
    """Imports `path` as module `name` (constants computed under `environ`, if given)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    saved = dict(os.environ)
    sys.modules[name] = module
    try:
        if environ is not None:
            os.environ.clear()
            os.environ.update(environ)
        spec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sys.modules.pop(name, None)
    return module


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _codec(state_type: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(to the wire, from the wire) for a flow's state type."""
    if isinstance(state_type, type) and dataclasses.is_dataclass(state_type):
        return dataclasses.asdict, lambda d: state_type(**d)
    if isinstance(state_type, type) and hasattr(state_type, "model_dump"):
        return (lambda m: m.model_dump()), lambda d: state_type(**d)
    return (lambda v: v), (lambda v: v)


def native(
    flow_file: Path,
    flow_name: str,
    handlers: ModuleType,
    payload: Any,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, Any]:
    """Runs the flow natively: ("ok", final payload) or ("error", (type, message))."""
    module = load(flow_file, f"native_{flow_file.stem}", environ)
    fn = getattr(module, flow_name)
    state_type = next(iter(inspect.signature(fn).parameters.values())).annotation
    # Only a state with fields (dataclass, pydantic) differs from its JSON object.
    typed = isinstance(state_type, type) and (
        dataclasses.is_dataclass(state_type) or hasattr(state_type, "model_dump")
    )
    state_class = state_type if typed else None
    to_wire, from_wire = _codec(state_type)
    is_async = inspect.iscoroutinefunction(fn)

    def stub(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def call(value: Any) -> Any:
            typed = state_class is not None and isinstance(value, state_class)
            arg = _json(to_wire(value)) if typed else _json(value)
            result = handler(arg)
            if typed and isinstance(result, dict):
                result = from_wire(result)
            elif result is not None:
                result = _json(result)
            if is_async and isinstance(result, dict):
                result = _Ready(result)
            return result

        return call

    # The file's handler stubs (and any other name the flow calls) become the test's stubs.
    for name in dir(handlers):
        value = getattr(handlers, name)
        if name.startswith("_") or getattr(value, "__module__", None) != handlers.__name__:
            continue
        setattr(module, name, value if isinstance(value, type) else stub(value))
    try:
        result = fn(from_wire(copy.deepcopy(payload)))
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except Exception as exc:
        return "error", (error_type_name(type(exc)), str(exc))
    return "ok", _json(to_wire(result))


def handler_map(handlers: ModuleType, names: list[str]) -> dict[str, Callable[[Any], Any]]:
    """Handler name (as the flow calls it) -> the stub, for the in-process mesh."""
    out: dict[str, Callable[[Any], Any]] = {}
    for name in names:
        if "." in name:
            cls_name, method = name.split(".")[-2:]
            out[name] = getattr(getattr(handlers, cls_name)(), method)
        else:
            out[name] = getattr(handlers, name)
    return out


def entry(flow_name: str) -> str:
    return f"start-{kebab(flow_name)}"


def outcome(end: str, envelope: dict[str, Any]) -> tuple[str, Any]:
    """A finished message as `native` reports a run: ("ok", payload) or ("error", (type, msg))."""
    if end == "x-sink":
        return "ok", envelope["payload"]
    error = envelope["status"]["error"]
    return "error", (error["type"], error["message"])
