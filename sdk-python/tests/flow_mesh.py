"""A small in-process model of the host's routing, for unit-testing compiled flows without
building components: payload-mode handlers are Python functions, the routers are the generated
`routers.dispatch`, and fan-out, fan-in and try frames follow the host's `flow` module. The
end-to-end tests (`test_flow_e2e.py`) run the same flows on the real host.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asya.flow import compile_file
from asya.flow.compiler import kebab
from asya.handling import failure

SINK, SUMP, FANIN = "x-sink", "x-sump", "x-fanin"


class Mesh:
    """Compiles `flow_source` and runs its routers beside `handlers` (actor name -> function)."""

    def __init__(
        self, tmp: Path, flow_source: str, handlers: dict[str, Callable[[Any], Any]], **options: Any
    ) -> None:
        src = tmp / "flow_src.py"
        src.write_text(flow_source, encoding="utf-8")
        out = tmp / "compiled"
        self.compiled = compile_file(src, out, overwrite=True, **options)
        # Handler `Scorer.score` is actor `scorer-score`, declared as
        # ASYA_HANDLER_SCORER_SCORE=handlers.Scorer.score, as a deployment would.
        self.handlers = {kebab(name): fn for name, fn in handlers.items()}
        self.env = {
            "ASYA_HANDLER_" + kebab(name).upper().replace("-", "_"): f"handlers.{name}"
            for name in handlers
        }
        # routers.py is self-contained: nothing else of the output directory is importable.
        assert sorted(p.name for p in out.glob("*.py")) == ["routers.py"]
        spec = importlib.util.spec_from_file_location("routers", out / "routers.py")
        assert spec and spec.loader
        self.routers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.routers)
        assert "asya" not in {m.split(".")[0] for m in _imports(self.routers)}
        # The inlined runtime: its names are the routers module's own.
        self.runtime = self.routers
        self.router_names = set(self.compiled.routers)
        self.hops: list[str] = []
        self.calls: list[str] = []

    def run(self, payload: Any, route: list[str] | None = None) -> tuple[str, dict[str, Any]]:
        """Sends `payload` along `route` (default: the first flow's entry router) and returns the
        end actor and final envelope."""
        route = route or [self.compiled.routers[0]]
        env = {
            "id": "m1",
            "route": {"prev": [], "curr": route[0], "next": route[1:]},
            "headers": {},
            "payload": payload,
            "status": {"phase": "pending"},
        }
        queue: deque[tuple[str, dict[str, Any]]] = deque([(route[0], env)])
        fanins: dict[str, dict[str, Any]] = {}
        ended: list[tuple[str, dict[str, Any]]] = []
        self.runtime._resolved.clear()
        saved = dict(self.runtime.os.environ)
        self.runtime.os.environ.update(self.env)
        try:
            steps = 0
            while queue:
                steps += 1
                assert steps < 100_000, "runaway mesh"
                dest, env = queue.popleft()
                self.hops.append(dest)
                if dest in (SINK, SUMP):
                    if env["id"] == "m1":
                        ended.append((dest, env))
                    continue
                if dest == FANIN:
                    self._fanin(env, fanins, queue)
                    continue
                queue.extend(self._step(dest, env))
        finally:
            self.runtime.os.environ.clear()
            self.runtime.os.environ.update(saved)
        assert len(ended) == 1, ended
        return ended[0]

    # one actor

    def _step(self, actor: str, env: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        try:
            if actor in self.router_names:
                given = copy.deepcopy(env)
                # Through JSON, as the host hands it over and reads it back.
                out = json.loads(json.dumps(self.routers.dispatch(copy.deepcopy(env))))
                # The host's rules for an envelope-mode result: id, prev and curr may be left
                # out but not changed; the rest of the route, headers and payload replace.
                assert out.get("id", given["id"]) == given["id"]
                assert out["route"].get("prev", given["route"]["prev"]) == given["route"]["prev"]
                assert out["route"].get("curr", given["route"]["curr"]) == given["route"]["curr"]
                env = {**given, **{k: out[k] for k in ("payload", "headers") if k in out}}
                env["route"] = {**given["route"], "next": list(out["route"]["next"])}
            else:
                self.calls.append(actor)
                fn = self.handlers[actor]
                result = fn(copy.deepcopy(env["payload"]))
                if result is not None and not isinstance(result, dict):
                    raise TypeError(f"handler returned {type(result).__name__}, expected a dict")
                if result is None:
                    if "x-asya-fanin" in env["headers"]:
                        env["payload"] = None
                    return [self._end(env, SINK)]
                env["payload"] = result
        except Exception as exc:
            # The record the guest writes (asya.handling), as the host passes it on.
            fields = failure(exc, skip_frames=0).fields
            env["status"] = {
                "phase": "failed",
                "error": {
                    "type": fields["type"],
                    "message": fields["message"],
                    "mro": fields["mro_names"],
                    "traceback": fields["traceback"],
                },
            }
            return [self._fail(actor, env)]
        env.setdefault("status", {}).pop("error", None)
        route = env["route"]
        if not route["next"]:
            return [self._end(env, SINK)]
        route["prev"] = [*route["prev"], route["curr"]]
        route["curr"], route["next"] = route["next"][0], route["next"][1:]
        fan = env["headers"].pop("x-asya-fanout", None)
        if fan is not None:
            return self._fanout(env, fan)
        return [(route["curr"], env)]

    def _end(self, env: dict[str, Any], end: str) -> tuple[str, dict[str, Any]]:
        if "x-asya-fanin" in env["headers"]:
            return (FANIN, env)
        return (end, env)

    def _fail(self, actor: str, env: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        error = env["status"]["error"]
        frames = env["headers"].get("x-asya-catch") or []
        for i in range(len(frames) - 1, -1, -1):
            names = frames[i]["errors"]
            if frames[i].get("resume") == actor:
                continue  # the flow's own router failed: it handled its try blocks itself
            if "*" in names or "Exception" in names or _matches(names, error):
                keep = frames[i]["keep"]
                route = env["route"]
                nxt = route["next"][len(route["next"]) - keep :] if keep else []
                env["route"] = {
                    "prev": [*route["prev"], route["curr"]],
                    "curr": frames[i]["router"],
                    "next": nxt,
                }
                if frames[:i]:
                    env["headers"]["x-asya-catch"] = frames[:i]
                else:
                    env["headers"].pop("x-asya-catch", None)
                env["status"]["phase"] = "pending"
                return (frames[i]["router"], env)
        return self._end(env, SUMP)

    def _fanout(self, env: dict[str, Any], fan: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        items = fan["items"]
        if not items:
            _set(env["payload"], fan["target"], [])
            return [(env["route"]["curr"], env)]
        out = []
        base = {
            k: v
            for k, v in env["headers"].items()
            if k not in ("x-asya-flow", "x-asya-catch", "x-asya-fanin")
        }
        key = f"{env['id']}_{len(env['route']['prev'])}"
        for i, item in enumerate(items):
            headers = {
                **base,
                "x-asya-fanin": {"parent": env["id"], "key": key, "index": i, "count": len(items)},
            }
            child = {
                "id": f"{key}.{i}",
                "route": {"prev": env["route"]["prev"][-1:], "curr": item["actor"], "next": []},
                "headers": headers,
                "payload": item["payload"],
                "status": {"phase": "pending"},
            }
            out.append((item["actor"], child))
        env["headers"]["x-asya-fanin-parent"] = {"count": len(items), "target": fan["target"]}
        # Children first, the parent last: the aggregator must cope with either order.
        out.reverse()
        out.append((FANIN, env))
        return out

    def _fanin(self, env: dict[str, Any], fanins: dict[str, dict[str, Any]], queue: deque) -> None:
        if "x-asya-fanin-parent" in env["headers"]:
            key = f"{env['id']}_{len(env['route']['prev'])}"
            count = env["headers"]["x-asya-fanin-parent"]["count"]
            fanins.setdefault(key, {"children": {}})["parent"] = env
        else:
            meta = env["headers"]["x-asya-fanin"]
            key, count = meta["key"], meta["count"]
            fanins.setdefault(key, {"children": {}})["children"][meta["index"]] = env
        state = fanins[key]
        if "parent" not in state or len(state["children"]) < count:
            return
        del fanins[key]
        parent = state["parent"]
        spec = parent["headers"].pop("x-asya-fanin-parent")
        children = [state["children"][i] for i in range(count)]
        for i, child in enumerate(children):
            error = (child.get("status") or {}).get("error")
            if error:
                parent["status"] = {
                    "phase": "failed",
                    "error": {**error, "message": f"fan-out item {i}: {error['message']}"},
                }
                queue.append(self._fail(FANIN, parent))
                return
        _set(parent["payload"], spec["target"], [c["payload"] for c in children])
        queue.append((parent["route"]["curr"], parent))


def _set(payload: Any, path: list[Any], value: Any) -> None:
    node = payload
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value


def _matches(names: list[str], error: dict[str, Any]) -> bool:
    """The host's rule: a frame's class name matches the error's type or an MRO entry in either
    form (`MyError` matches `handlers.MyError`)."""
    entries = [error["type"], *error.get("mro", [])]
    return any(n == e or e.endswith("." + n) or n.endswith("." + e) for n in names for e in entries)


def _imports(module: Any) -> set[str]:
    import ast

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found
