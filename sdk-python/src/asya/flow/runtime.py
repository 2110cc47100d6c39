"""What compiled flow routers run: the block driver, handler-name resolution and the flow state
that travels in the envelope's headers. Standard library only: `asya flow compile` inlines this
module into the generated `routers.py`, which is therefore one self-contained file (a router
image built with `COPY compiled/routers.py` works) and needs nothing from asya at run time.

Headers owned by flows (all JSON):
- `x-asya-flow`: per flow name, the state of the running flow: `keep` (how many route steps
  after the flow belong to the caller), loop counters, `for` iterators and bound variables.
- `x-asya-catch`: the active `try` frames, innermost last. The host sends a message whose actor
  failed for good to the innermost frame that handles the error type (or one of its MRO names)
  instead of `x-sump`.
- `x-asya-fanout`: set by a router to ask the host to fan out (see the host's `flow` module).
"""

from __future__ import annotations

import copy
import os
import traceback
from collections.abc import Callable
from typing import Any

FLOW_HEADER = "x-asya-flow"
CATCH_HEADER = "x-asya-catch"
FANOUT_HEADER = "x-asya-fanout"
HANDLER_ENV_PREFIX = "ASYA_HANDLER_"

Block = Callable[[Any, dict[str, Any]], tuple[Any, tuple[Any, ...]]]


class FlowError(Exception):
    """A flow cannot go on (missing state, unknown block): a bug or a tampered envelope."""


class FlowLoopLimitExceeded(Exception):
    """A `while` or `for` loop ran more iterations than the flow's guard allows."""


class HandlerNotFound(LookupError):
    """No actor's `ASYA_HANDLER_<ACTOR>` matches a handler name used by the flow."""


class AmbiguousHandler(LookupError):
    """Several actors' handlers match a handler name used by the flow."""


def _handler_actors() -> dict[str, str]:
    actors = {}
    for key, value in os.environ.items():
        if not key.startswith(HANDLER_ENV_PREFIX) or key == "ASYA_HANDLER_MODE":
            continue
        actor = key[len(HANDLER_ENV_PREFIX) :].lower().replace("_", "-")
        if actor:
            actors[actor] = value.strip()
    return actors


_resolved: dict[str, str] = {}


def resolve(name: str, environ: dict[str, str] | None = None) -> str:
    """The actor whose handler is `name`: `method`, `Class.method` or `module.Class.method`.

    Every `ASYA_HANDLER_<ACTOR>=module.Class.method` environment variable declares one actor
    (`<ACTOR>` upper-cased, `-` as `_`). `name` matches a handler when it equals one of the
    handler's dotted suffixes; the shortest unambiguous suffix is enough."""
    if environ is None and name in _resolved:
        return _resolved[name]
    if environ is None:
        actors = _handler_actors()
    else:
        actors = {
            k[len(HANDLER_ENV_PREFIX) :].lower().replace("_", "-"): v
            for k, v in environ.items()
            if k.startswith(HANDLER_ENV_PREFIX) and k != "ASYA_HANDLER_MODE"
        }
    matches = sorted(
        actor
        for actor, handler in actors.items()
        if handler == name or handler.endswith("." + name)
    )
    if not matches:
        known = ", ".join(f"{a}={h}" for a, h in sorted(actors.items())) or "none"
        raise HandlerNotFound(
            f"no actor's handler matches {name!r}: declare one with "
            f"ASYA_HANDLER_<ACTOR>=module.{name} (declared: {known})"
        )
    if len(matches) > 1:
        listed = ", ".join(f"{a}={actors[a]}" for a in matches)
        raise AmbiguousHandler(
            f"handler name {name!r} is ambiguous: it matches {listed}; "
            "use a longer name (Class.method or module.Class.method)"
        )
    if environ is None:
        _resolved[name] = matches[0]
    return matches[0]


# --- loop and error helpers called from generated blocks ---------------------------------------


def loop_reset(state: dict[str, Any], loop: str) -> None:
    state["loops"][loop] = 0


def loop_tick(state: dict[str, Any], loop: str, limit: int) -> None:
    count = state["loops"].get(loop, 0) + 1
    if count > limit:
        raise FlowLoopLimitExceeded(
            f"loop {loop} ran more than {limit} iterations (the flow's iteration guard)"
        )
    state["loops"][loop] = count


def for_init(state: dict[str, Any], loop: str, iterable: Any) -> None:
    state["iters"][loop] = {"items": list(iterable), "i": 0}


def for_next(state: dict[str, Any], loop: str, var: str) -> bool:
    it = state["iters"].get(loop)
    if it is None or it["i"] >= len(it["items"]):
        state["iters"].pop(loop, None)
        return False
    state["vars"][var] = it["items"][it["i"]]
    it["i"] += 1
    return True


def for_done(state: dict[str, Any], loop: str) -> None:
    state["iters"].pop(loop, None)


#: The attribute an exception carries the record of the error it re-raises in (the guest reports
#: that record, not the exception's own class: see `asya.handling.ERROR_RECORD_ATTR`).
ERROR_RECORD_ATTR = "_asya_error"


class CaughtError(Exception):
    """The error an `except ... as e:` clause binds: `type`, `message`, `mro`, `traceback`.
    `raise e` raises it again as that error."""

    def __init__(self, record: dict[str, Any] | None) -> None:
        self.record = dict(record or {})
        self.type: str = str(self.record.get("type") or "Exception")
        self.message: str = str(self.record.get("message") or "")
        self.mro: list[str] = [str(m) for m in self.record.get("mro") or []]
        self.traceback: str = str(self.record.get("traceback") or "")
        super().__init__(self.message)
        setattr(self, ERROR_RECORD_ATTR, {**self.record, "type": self.type, "mro": self.mro})

    def __str__(self) -> str:
        return self.message


class Reraised(CaughtError):
    """A bare `raise` in an except clause (or the end of a `finally` left by an error): the
    error handled there, raised again with its own type, message, MRO and traceback."""


def type_name(cls: type) -> str:
    """`error.type` as Asya writes it: bare for builtins, `module.Qualname` otherwise."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None) or cls.__name__
    if not module or module == "builtins":
        return str(qualname)
    return f"{module}.{qualname}"


def name_matches(name: str, entry: str) -> bool:
    """Whether an except clause's class name matches a type or MRO entry, in either form:
    `HTTPError` matches `requests.exceptions.HTTPError` (a dotted suffix), and a qualified name
    matches its bare form."""
    return name == entry or entry.endswith("." + name) or name.endswith("." + entry)


def error_matches(error: dict[str, Any] | None, names: list[str]) -> bool:
    """Whether `error` (a `status.error` record) is one of `names` or has one in its MRO."""
    if "*" in names or "Exception" in names:
        # Host failures (Timeout, MemoryLimit, ...) have no Python MRO; `except Exception`
        # catches them like any handler error.
        return True
    if not error:
        return False
    seen = [str(error.get("type") or "")] + [str(m) for m in error.get("mro") or []]
    return any(name_matches(name, entry) for name in names for entry in seen if entry)


def error_record(exc: BaseException) -> dict[str, Any]:
    """The `status.error`-shaped record of an exception raised inside a router (the error it
    re-raises, for `Reraised` / `raise e`)."""
    carried = getattr(exc, ERROR_RECORD_ATTR, None)
    if isinstance(carried, dict) and carried.get("type"):
        return dict(carried)
    mro = [type_name(c) for c in type(exc).__mro__[1:] if c not in (BaseException, object)]
    return {
        "type": type_name(type(exc)),
        "message": str(exc),
        "mro": mro,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def caught(
    state: dict[str, Any], names: list[str], var: str | None = None, hold: str | None = None
) -> bool:
    """Whether the error being handled matches an except clause; binds `as var` if it does, and
    keeps it as `hold` when the clause may re-raise it (after calling actors)."""
    if not error_matches(state.get("_error"), names):
        return False
    if var:
        state["vars"][var] = state.get("_error") or {}
    if hold:
        state["vars"][hold] = state.get("_error") or {}
    return True


def hold_error(state: dict[str, Any], hold: str) -> None:
    """Keeps the error a `finally` runs for, to raise it again when the finally code ends."""
    state["vars"][hold] = state.get("_error") or {}


def reraise(state: dict[str, Any], hold: str | None = None) -> None:
    """Raises the error being handled (kept as `hold`, or the current one) again."""
    error = state["vars"].pop(hold, None) if hold else None
    raise Reraised(error or state.get("_error") or {"type": "Exception", "message": "raise"})


def state_defaults(payload: Any, defaults: dict[str, Any]) -> None:
    """A dataclass / pydantic state: keys missing from the payload get the class's defaults."""
    if isinstance(payload, dict):
        for key, value in defaults.items():
            if key not in payload:
                payload[key] = copy.deepcopy(value)


# --- the driver ---------------------------------------------------------------------------------


class Flow:
    """One compiled flow: its blocks, the router actor of each resumable block, and limits."""

    def __init__(
        self,
        name: str,
        blocks: dict[str, Block],
        routers: dict[str, str],
        try_frames: dict[str, list[tuple[str, list[str]]]],
        start: str,
        max_steps: int = 100_000,
    ) -> None:
        self.name = name
        self.blocks = blocks
        self.routers = routers
        self.try_frames = try_frames
        self.start = start
        self.max_steps = max_steps

    def router(self, block: str) -> str:
        try:
            return self.routers[block]
        except KeyError:
            raise FlowError(f"flow {self.name}: block {block} has no router actor") from None

    def run(self, envelope: dict[str, Any], block: str) -> dict[str, Any]:
        """Runs blocks from `block` until the flow calls an actor, fans out or ends. Returns what
        the host needs back, and only that: the future route (`route.next`), the headers and the
        payload (an envelope-mode result may leave out id, prev, curr and status, which cannot
        change; not echoing them halves the JSON the router writes and the host reads)."""
        route = envelope.get("route")
        following = route.get("next") if isinstance(route, dict) else None
        following = list(following) if following else []
        headers = envelope.get("headers")
        if not isinstance(headers, dict):
            headers = {}
        states = headers.get(FLOW_HEADER)
        if not isinstance(states, dict):
            states = {}
        if block == self.start:
            keep = len(following)
            state: dict[str, Any] = {"keep": keep, "vars": {}, "loops": {}, "iters": {}}
        else:
            carried = states.get(self.name)
            if not isinstance(carried, dict):
                raise FlowError(
                    f"flow {self.name}: the envelope carries no state for this flow "
                    f"(header {FLOW_HEADER}); was it sent to a router directly?"
                )
            keep = int(carried.get("keep", len(following)))
            # On the wire the state leaves out its empty parts.
            state = {
                "keep": keep,
                "vars": carried.get("vars") or {},
                "loops": carried.get("loops") or {},
                "iters": carried.get("iters") or {},
            }
        if len(states) > (self.name in states):
            # A sub-flow runs with a longer tail than its caller; when the caller runs again,
            # any such state is left over from a sub-flow that an exception cut short.
            for name in [n for n, st in states.items() if n != self.name and _keep(st) > keep]:
                del states[name]
        caller = following[len(following) - keep :] if keep else []
        status = envelope.get("status")
        state["_error"] = status.get("error") if isinstance(status, dict) else None
        payload = envelope.get("payload")
        if state["vars"]:
            _held_payloads(state["vars"], payload, resume=True)
        blocks = self.blocks
        steps = 0
        while True:
            steps += 1
            if steps > self.max_steps:
                raise FlowLoopLimitExceeded(
                    f"flow {self.name} ran {self.max_steps} steps without calling an actor"
                )
            function = blocks.get(block)
            if function is None:
                raise FlowError(f"flow {self.name}: unknown block {block}")
            try:
                payload, term = function(payload, state)
            except Exception as exc:
                # An error raised by the flow's own code inside a `try` is handled right here,
                # with the payload as it was when the error happened.
                record = error_record(exc)
                handler = self._inline_handler(block, record)
                if handler is None:
                    raise
                payload = getattr(exc, "_asya_payload", payload)
                state["_error"] = record
                block = handler
                continue
            kind = term[0]
            if kind == "goto":
                block = term[1]
                continue
            del state["_error"]
            if kind == "end":
                states.pop(self.name, None)
                self._set_frames(headers, [], keep, None)
                following = caller
            elif kind == "call":
                _, target, after = term
                actors = [_actor(target)]
                # Consecutive calls in the same try scope go straight from actor to actor.
                frames = self.try_frames.get(block)
                while True:
                    chained = getattr(blocks.get(after), "chain", None)
                    if chained is None or self.try_frames.get(after) != frames:
                        break
                    actors.append(_actor(chained[0]))
                    after = chained[1]
                following = [*actors, self.router(after), *caller]
                self._set_frames(headers, frames or [], keep, after)
            elif kind == "fanout":
                _, target, items, after = term
                headers[FANOUT_HEADER] = {
                    "target": list(target),
                    "items": [{"actor": _actor(t), "payload": item} for t, item in items],
                }
                if state["vars"]:
                    # The fan-in merges into this payload object: still the one `return` named.
                    _held_payloads(state["vars"], payload, resume=False)
                following = [self.router(after), *caller]
                self._set_frames(headers, self.try_frames.get(block, []), keep, after)
            else:
                raise FlowError(f"flow {self.name}: unknown step {kind!r}")
            if kind != "end":
                states[self.name] = {k: v for k, v in state.items() if v or k == "keep"}
            if states:
                headers[FLOW_HEADER] = states
            else:
                headers.pop(FLOW_HEADER, None)
            return {"route": {"next": following}, "headers": headers, "payload": payload}

    def _inline_handler(self, block: str, record: dict[str, Any]) -> str | None:
        for handler_block, names in reversed(self.try_frames.get(block, [])):
            if error_matches(record, names):
                return handler_block
        return None

    def _set_frames(
        self,
        headers: dict[str, Any],
        frames: list[tuple[str, list[str]]],
        keep: int,
        resume: str | None,
    ) -> None:
        """Sets this flow's try frames for the next hop. `resume` is the block whose router runs
        after the call: a failure of that router's own code is not caught by these frames (the
        router handles errors inside its `try` blocks itself)."""
        current = headers.get(CATCH_HEADER)
        if not frames and current is None:
            return  # no try frames before or after: the common case, nothing to write
        others = [
            f
            for f in (current if isinstance(current, list) else [])
            if isinstance(f, dict) and f.get("flow") != self.name and _keep(f) <= keep
        ]
        resume_router = self.router(resume) if resume is not None else None
        ours = [
            {
                "flow": self.name,
                "router": self.router(handler_block),
                "keep": keep,
                "errors": errs,
                "resume": resume_router,
            }
            for handler_block, errs in frames
        ]
        if others or ours:
            headers[CATCH_HEADER] = others + ours
        else:
            headers.pop(CATCH_HEADER, None)


#: A payload held by `return p` inside try/finally that is still the flow's payload object.
_SAME_PAYLOAD = "\x00the-payload"


def _held_payloads(variables: dict[str, Any], payload: Any, resume: bool) -> None:
    """`return p` inside try/finally returns the object `return` named, as Python does: the
    finally code's mutations of it count, a rebinding of p does not. Across a fan-out (which
    mutates the payload) the held payload stays the payload object; across an actor call
    (`p = f(p)`, a new object) it is the copy held."""
    for key, value in variables.items():
        if not key.startswith("_ret"):
            continue
        if resume and isinstance(value, str) and value == _SAME_PAYLOAD:
            variables[key] = payload
        elif not resume and value is payload:
            variables[key] = _SAME_PAYLOAD


def _keep(entry: Any) -> int:
    try:
        return int(entry.get("keep", 0))
    except (AttributeError, TypeError, ValueError):
        return 0


def _actor(target: tuple[str, str]) -> str:
    kind, name = target
    return name if kind == "actor" else resolve(name)


def chain(function: Block, target: tuple[str, str], after: str) -> Block:
    """Marks a block that only calls an actor, so a preceding call can route straight to it."""
    function.chain = (target, after)  # type: ignore[attr-defined]
    return function
