"""The Flow DSL compiler on every construct: compiled flows run in the in-process model of the
host's routing (`flow_mesh`), and unsupported constructs fail with file, line, column and hint."""

from __future__ import annotations

import copy
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flow_mesh import Mesh
from flow_oracle import ASYA_CASES, ASYA_FLOWS, entry, handler_map, load, native, outcome

from asya.cli import main
from asya.flow import FlowCompileError, compile_file, compile_source
from asya.flow.runtime import AmbiguousHandler, HandlerNotFound, resolve


def flow(source: str) -> str:
    return textwrap.dedent(source).lstrip()


def add(key: str, value: Any):
    def handler(p: dict) -> dict:
        return {**p, key: value}

    return handler


def inc(p: dict) -> dict:
    return {**p, "n": p.get("n", 0) + 1}


REVIEW = flow(
    """
    def review_flow(p: dict) -> dict:
        p = clean_text(p)
        if p["language"] == "en":
            p = english_sentiment(p)
        elif p["language"] == "es":
            p = spanish_sentiment(p)
        else:
            p["sentiment"] = "neutral"
        p["reviewed"] = True
        return p
    """
)


def review_handlers() -> dict[str, Any]:
    return {
        "clean_text": lambda p: {**p, "language": p["lang"]},
        "english_sentiment": add("sentiment", "en-positive"),
        "spanish_sentiment": add("sentiment", "es-positive"),
    }


@pytest.mark.parametrize(
    ("lang", "sentiment", "calls"),
    [
        ("en", "en-positive", ["clean-text", "english-sentiment"]),
        ("es", "es-positive", ["clean-text", "spanish-sentiment"]),
        ("fr", "neutral", ["clean-text"]),
    ],
)
def test_if_elif_else_takes_each_branch(tmp_path: Path, lang, sentiment, calls) -> None:
    mesh = Mesh(tmp_path, REVIEW, review_handlers())
    end, env = mesh.run({"lang": lang})
    assert end == "x-sink"
    assert env["payload"]["sentiment"] == sentiment
    assert env["payload"]["reviewed"] is True
    assert mesh.calls == calls
    assert "x-asya-flow" not in env["headers"], "flow state is cleaned up at the end"


def test_router_names_follow_the_convention(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path, REVIEW, review_handlers())
    routers = mesh.compiled.routers
    assert routers[0] == "start-review-flow"
    assert routers[-1] == "end-review-flow"
    assert "router-review-flow-line-3-if" in routers
    text = (tmp_path / "compiled" / "routers.py").read_text()
    assert "def start_review_flow(envelope)" in text
    assert "def end_review_flow(envelope)" in text
    assert "def router_review_flow_line_3_if(envelope)" in text
    compile(text, "routers.py", "exec")


def test_consecutive_calls_go_straight_from_actor_to_actor(tmp_path: Path) -> None:
    source = flow(
        """
        async def chain(p):
            p = await a(p)
            p = b(p)
            p = c(p)
            return p
        """
    )
    mesh = Mesh(tmp_path, source, {"a": add("a", 1), "b": add("b", 2), "c": add("c", 3)})
    _end, env = mesh.run({})
    assert env["payload"] == {"a": 1, "b": 2, "c": 3}
    assert mesh.hops == ["start-chain", "a", "b", "c", "end-chain", "x-sink"]


def test_payload_mutations_and_nested_subscripts(tmp_path: Path) -> None:
    source = flow(
        """
        def mutate(p):
            p["n"] = 1
            p["n"] += 41
            p["deep"] = {"a": {"b": []}}
            p["deep"]["a"]["b"].append(len(p["words"]))
            p["upper"] = [w.upper() for w in p["words"] if w]
            del p["words"]
            p = {**p, "spread": True}
            return p
        """
    )
    mesh = Mesh(tmp_path, source, {})
    _, env = mesh.run({"words": ["x", "", "y"]})
    assert env["payload"] == {
        "n": 42,
        "deep": {"a": {"b": [3]}},
        "upper": ["X", "Y"],
        "spread": True,
    }


def test_class_handlers_bind_once_and_call_methods(tmp_path: Path) -> None:
    source = flow(
        """
        def classy(p):
            scorer = Scorer()
            p = scorer.score(p)
            return p
        """
    )
    mesh = Mesh(tmp_path, source, {"Scorer.score": add("score", 0.9)})
    _, env = mesh.run({})
    assert env["payload"]["score"] == 0.9
    assert mesh.calls == ["scorer-score"]
    assert mesh.compiled.program.handlers == ["Scorer.score"]


def test_early_return_skips_the_rest(tmp_path: Path) -> None:
    source = flow(
        """
        def early(p):
            if p.get("skip"):
                p["skipped"] = True
                return p
            p = work(p)
            return p
        """
    )
    mesh = Mesh(tmp_path, source, {"work": add("worked", True)})
    _, env = mesh.run({"skip": True})
    assert env["payload"] == {"skip": True, "skipped": True}
    assert mesh.calls == []
    _, env = Mesh(tmp_path, source, {"work": add("worked", True)}).run({})
    assert env["payload"]["worked"] is True


def test_while_loop_counts_break_and_continue(tmp_path: Path) -> None:
    source = flow(
        """
        def loop(p):
            p["n"] = 0
            p["odd"] = 0
            while p["n"] < p["limit"]:
                p = inc(p)
                if p["n"] == p["stop_at"]:
                    break
                if p["n"] % 2 == 0:
                    continue
                p["odd"] += 1
            p["done"] = True
            return p
        """
    )
    mesh = Mesh(tmp_path, source, {"inc": inc})
    _, env = mesh.run({"limit": 7, "stop_at": -1})
    assert (env["payload"]["n"], env["payload"]["odd"]) == (7, 4)
    assert mesh.calls == ["inc"] * 7
    mesh = Mesh(tmp_path, source, {"inc": inc})
    _, env = mesh.run({"limit": 7, "stop_at": 3})
    assert (env["payload"]["n"], env["payload"]["odd"]) == (3, 1)
    _, env = Mesh(tmp_path, source, {"inc": inc}).run({"limit": 0, "stop_at": -1})
    assert env["payload"]["n"] == 0 and env["payload"]["done"]


def test_the_iteration_guard_stops_runaway_loops(tmp_path: Path) -> None:
    source = flow(
        """
        def forever(p):
            while p["go"]:
                p = inc(p)
            return p
        """
    )
    mesh = Mesh(tmp_path, source, {"inc": inc}, max_iterations=25)
    end, env = mesh.run({"go": True})
    assert end == "x-sump"
    assert env["status"]["error"]["type"] == "routers.FlowLoopLimitExceeded"
    assert mesh.calls == ["inc"] * 25


def test_nested_loops_reset_the_inner_counter(tmp_path: Path) -> None:
    source = flow(
        """
        def nested(p):
            p["i"] = 0
            p["total"] = 0
            while p["i"] < 4:
                p["i"] += 1
                p["j"] = 0
                while p["j"] < 3:
                    p["j"] += 1
                    p = bump(p)
            return p
        """
    )

    def bump(p: dict) -> dict:
        return {**p, "total": p["total"] + 1}

    mesh = Mesh(tmp_path, source, {"bump": bump}, max_iterations=4)
    end, env = mesh.run({})
    assert end == "x-sink", env["status"]
    assert env["payload"]["total"] == 12


def test_for_loops_over_payload_items(tmp_path: Path) -> None:
    source = flow(
        """
        def each(p):
            p["seen"] = []
            for item in p["items"]:
                if item == "skip":
                    continue
                if item == "stop":
                    break
                p["current"] = item
                p = tag(p)
                p["seen"].append(item)
            p["after"] = item
            return p
        """
    )

    def tag(p: dict) -> dict:
        return {**p, "tags": [*p.get("tags", []), p["current"].upper()]}

    mesh = Mesh(tmp_path, source, {"tag": tag})
    _, env = mesh.run({"items": ["a", "skip", "b", "stop", "c"]})
    assert env["payload"]["seen"] == ["a", "b"]
    assert env["payload"]["tags"] == ["A", "B"]
    assert env["payload"]["after"] == "stop"
    assert "x-asya-flow" not in env["headers"]


def test_try_except_catches_by_type_and_mro(tmp_path: Path) -> None:
    source = flow(
        """
        def guarded(p):
            try:
                p = risky(p)
                p["ok"] = True
            except KeyError as e:
                p["caught"] = "key"
                p["message"] = str(e)
                p["type"] = e.type
            except LookupError:
                p["caught"] = "lookup"
            else:
                p["else"] = True
            p = after(p)
            return p
        """
    )

    def risky(p: dict) -> dict:
        if p["raise"] == "key":
            raise KeyError("missing")
        if p["raise"] == "index":
            raise IndexError("out of range")  # an IndexError is a LookupError
        if p["raise"] == "value":
            raise ValueError("not caught")
        return p

    handlers = {"risky": risky, "after": add("after", True)}
    _, env = Mesh(tmp_path, source, handlers).run({"raise": None})
    assert env["payload"]["ok"] and env["payload"]["else"] and env["payload"]["after"]
    _, env = Mesh(tmp_path, source, handlers).run({"raise": "key"})
    assert env["payload"]["caught"] == "key"
    assert env["payload"]["type"] == "KeyError"
    assert "missing" in env["payload"]["message"]
    assert "ok" not in env["payload"] and "else" not in env["payload"]
    assert env["payload"]["after"] is True
    _, env = Mesh(tmp_path, source, handlers).run({"raise": "index"})
    assert env["payload"]["caught"] == "lookup"
    end, env = Mesh(tmp_path, source, handlers).run({"raise": "value"})
    assert end == "x-sump"
    assert env["status"]["error"]["type"] == "ValueError"


def test_errors_in_the_flows_own_code_are_caught_too(tmp_path: Path) -> None:
    source = flow(
        """
        def inline(p):
            try:
                p["x"] = p["missing"] + 1
            except KeyError:
                p["x"] = 0
            return p
        """
    )
    _, env = Mesh(tmp_path, source, {}).run({})
    assert env["payload"] == {"x": 0}


def test_fan_out_comprehension_merges_in_order(tmp_path: Path) -> None:
    source = flow(
        """
        def fan(p):
            p["results"] = [double(x) for x in p["items"]]
            p["count"] = len(p["results"])
            return p
        """
    )
    double = lambda x: {"value": x * 2}  # noqa: E731
    for n in (0, 1, 50):
        end, env = Mesh(tmp_path, source, {"double": double}).run({"items": list(range(n))})
        assert end == "x-sink"
        assert env["payload"]["results"] == [{"value": i * 2} for i in range(n)]
        assert env["payload"]["count"] == n


def test_gather_fans_out_to_different_actors(tmp_path: Path) -> None:
    source = flow(
        """
        import asyncio

        async def both(p):
            p["pair"] = await asyncio.gather(english(p), spanish(p["text"]))
            p["many"] = await asyncio.gather(*[english(t) for t in p["texts"]])
            return p
        """
    )
    handlers = {
        "english": lambda x: {"en": x["text"] if isinstance(x, dict) else x},
        "spanish": lambda x: {"es": x},
    }
    _, env = Mesh(tmp_path, source, handlers).run({"text": "hi", "texts": ["a", "b"]})
    assert env["payload"]["pair"] == [{"en": "hi"}, {"es": "hi"}]
    assert env["payload"]["many"] == [{"en": "a"}, {"en": "b"}]


def test_a_failed_fan_out_item_fails_the_parent_or_is_caught(tmp_path: Path) -> None:
    source = flow(
        """
        def fan(p):
            try:
                p["results"] = [check(x) for x in p["items"]]
            except ValueError as e:
                p["error"] = str(e)
            return p
        """
    )

    def check(x: int) -> dict:
        if x == 3:
            raise ValueError("three is bad")
        return {"x": x}

    _, env = Mesh(tmp_path, source, {"check": check}).run({"items": [1, 2, 3, 4]})
    assert "three is bad" in env["payload"]["error"]
    assert "item 2" in env["payload"]["error"]  # the third item, index 2
    _, env = Mesh(tmp_path, source, {"check": check}).run({"items": [1]})
    assert env["payload"]["results"] == [{"x": 1}]


def test_fan_out_item_returning_none_gives_none(tmp_path: Path) -> None:
    source = flow(
        """
        def fan(p):
            p["results"] = [maybe(x) for x in p["items"]]
            return p
        """
    )
    maybe = lambda x: None if x % 2 else {"x": x}  # noqa: E731
    _, env = Mesh(tmp_path, source, {"maybe": maybe}).run({"items": [0, 1, 2]})
    assert env["payload"]["results"] == [{"x": 0}, None, {"x": 2}]


def test_sub_flows_and_the_callers_route_survive(tmp_path: Path) -> None:
    source = flow(
        """
        __flows__ = ["inner", "outer"]  # both are flows: outer calls inner as a sub-flow

        def inner(p):
            p = a(p)
            try:
                p = boom(p)
            except RuntimeError:
                p["inner_caught"] = True
            return p

        def outer(p):
            try:
                p = inner(p)
                p = b(p)
            except ValueError:
                p["outer_caught"] = True
            return p
        """
    )

    def boom(p: dict) -> dict:
        raise (RuntimeError if p["kind"] == "runtime" else ValueError)("boom")

    handlers = {"a": add("a", 1), "b": add("b", 2), "boom": boom, "tail": add("tail", 3)}
    mesh = Mesh(tmp_path, source, handlers)
    _, env = mesh.run({"kind": "runtime"}, route=["start-outer", "tail"])
    assert env["payload"] == {"kind": "runtime", "a": 1, "inner_caught": True, "b": 2, "tail": 3}
    mesh = Mesh(tmp_path, source, handlers)
    __, env = mesh.run({"kind": "value"}, route=["start-outer", "tail"])
    assert env["payload"] == {"kind": "value", "a": 1, "outer_caught": True, "tail": 3}
    assert "x-asya-catch" not in env["headers"]


def test_a_flow_is_plain_python_and_runs_as_is() -> None:
    namespace: dict[str, Any] = {
        "clean_text": lambda p: {**p, "language": p["lang"]},
        "english_sentiment": add("sentiment", "en"),
        "spanish_sentiment": add("sentiment", "es"),
    }
    exec(REVIEW, namespace)
    assert namespace["review_flow"]({"lang": "en"})["sentiment"] == "en"


# --- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "hint"),
    [
        ("p['a'], p['b'] = x(p)", "tuple targets", "separately"),
        ("p = f(g(p))", "nested calls", "one actor per statement"),
        ("c = Model(3)\n    p = c.run(p)", "constructed with arguments", "default"),
        ("import json", "cannot import", "module level"),
        ("global counter", "'global' is not supported", "payload"),
        ("p['x'] = threshold", "free variable 'threshold'", "p['threshold']"),
        ("x = 1", "keeps no variables", "p['x']"),
        ("p = f(p, 2)", "exactly the payload", ""),
        ("f(p)", "discarded", "p = f(p)"),
        ("p = f(p['x'])", "whole payload", "fan out"),
        ("while True:\n        p = f(p)", "can never exit", "break"),
        ("p['x'] = f(p) + 1", "nested inside expressions", ""),
        ("raise", "only allowed inside an except clause", "handler"),
        ("p.x = 1", "attribute assignment", ""),
        ("p['k'] = (y := 2)", "':='", ""),
    ],
)
def test_unsupported_constructs_are_rejected_with_location(
    tmp_path: Path, body: str, message: str, hint: str
) -> None:
    source = f"def bad(p):\n    {body}\n    return p\n"
    with pytest.raises(FlowCompileError) as info:
        compile_source(source, "bad_flow.py")
    err = info.value
    assert message in err.message, str(err)
    assert hint in err.hint, str(err)
    assert str(err).startswith(f"bad_flow.py:{err.line}:{err.column}: ")
    assert err.line >= 2


def test_module_level_code_and_bad_signatures_are_rejected() -> None:
    with pytest.raises(FlowCompileError, match="cannot be computed") as info:
        compile_source(
            "import time\nNOW = time.time()\ndef f(p):\n    p['t'] = NOW\n    return p\n"
        )
    assert (info.value.line, info.value.column) == (4, 14)
    with pytest.raises(FlowCompileError, match="exactly one parameter"):
        compile_source("def f(p, q):\n    return p\n", "x.py")
    with pytest.raises(FlowCompileError, match="no flow function found"):
        compile_source("X = 1\n", "x.py")
    with pytest.raises(FlowCompileError, match="exactly one parameter"):
        compile_source("__flows__ = ['f']\ndef f(p, q):\n    return p\n", "x.py")
    with pytest.raises(FlowCompileError, match="not valid Python"):
        compile_source("def f(p):\n    return (\n", "x.py")
    with pytest.raises(FlowCompileError, match="calls itself"):
        compile_source("def f(p):\n    p = f(p)\n    return p\n", "x.py")


# --- resolve ------------------------------------------------------------------------------------


def test_resolve_uses_the_shortest_unambiguous_suffix() -> None:
    env = {
        "ASYA_HANDLER_SCORER": "models.Scorer.score",
        "ASYA_HANDLER_RANKER": "models.Ranker.score",
        "ASYA_HANDLER_CLEAN_TEXT": "text.clean",
        "ASYA_HANDLER_MODE": "payload",
    }
    assert resolve("clean", env) == "clean-text"
    assert resolve("Scorer.score", env) == "scorer"
    assert resolve("models.Ranker.score", env) == "ranker"
    with pytest.raises(AmbiguousHandler, match=r"scorer=models\.Scorer\.score"):
        resolve("score", env)
    with pytest.raises(HandlerNotFound, match="ASYA_HANDLER_<ACTOR>"):
        resolve("missing", env)
    with pytest.raises(HandlerNotFound):
        resolve("ore", env)  # a suffix of a name part is not a match


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_compile_validate_and_plot(tmp_path: Path, repo: Path) -> None:
    runner = CliRunner()
    source = repo / "examples" / "review-flow" / "flow.py"
    out = tmp_path / "out"
    result = runner.invoke(main, ["flow", "validate", str(source)])
    assert result.exit_code == 0, result.output
    assert "review_flow" in result.output
    args = ["flow", "compile", str(source), "--output-dir", str(out), "--plot", "--verbose"]
    result = runner.invoke(main, [*args, "--actors", str(source.parent / "actors")])
    assert result.exit_code == 0, result.output
    for name in ("routers.py", "flow.dot", "flow.svg", "flow.png"):
        assert (out / name).is_file(), name
    assert not (out / "_asya_flow.py").exists(), "routers.py is self-contained"
    assert (out / "flow.png").read_bytes()[:4] == b"\x89PNG"
    manifests = (out / "actors" / "review-flow.yaml").read_text()
    assert "ASYA_HANDLER_ENGLISH_SENTIMENT: handlers.english_sentiment" in manifests
    assert "handler: routers.dispatch" in manifests
    listing = (out / "handlers.yaml").read_text()
    assert "english-sentiment" in listing
    result = runner.invoke(main, args)
    assert result.exit_code == 1 and "--overwrite" in result.output
    result = runner.invoke(main, [*args, "--overwrite", "--plot-width", "400"])
    assert result.exit_code == 0, result.output
    bad = tmp_path / "bad.py"
    bad.write_text("def f(p):\n    p = g(h(p))\n    return p\n")
    result = runner.invoke(main, ["flow", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2:" in result.output and "nested calls" in result.output


# --- semantics found in review -------------------------------------------------------------------


def test_an_error_after_a_try_is_not_caught_by_it(tmp_path: Path) -> None:
    source = flow(
        """
        def f(p):
            try:
                p = inc(p)
            except Exception:
                p["caught"] = True
            p["x"] = 1 / p["zero"]
            return p
        """
    )
    end, env = Mesh(tmp_path, source, {"inc": inc}).run({"zero": 0})
    assert end == "x-sump"
    assert env["status"]["error"]["type"] == "ZeroDivisionError"
    assert "caught" not in env["payload"]


def test_the_payload_rebound_before_an_inline_error_is_kept(tmp_path: Path) -> None:
    source = flow(
        """
        def f(p):
            try:
                p = {**p, "a": 1}
                p["b"] = p["missing"]
            except KeyError:
                p["caught"] = True
            return p
        """
    )
    _, env = Mesh(tmp_path, source, {}).run({})
    assert env["payload"] == {"a": 1, "caught": True}


def test_for_loops_have_the_iteration_guard(tmp_path: Path) -> None:
    source = flow(
        """
        def f(p):
            p["s"] = 0
            for x in range(p["n"]):
                p["s"] += x
            return p
        """
    )
    end, env = Mesh(tmp_path, source, {}, max_iterations=10).run({"n": 50})
    assert end == "x-sump"
    assert env["status"]["error"]["type"] == "routers.FlowLoopLimitExceeded"
    _, env = Mesh(tmp_path, source, {}, max_iterations=10).run({"n": 10})
    assert env["payload"]["s"] == 45


def test_a_sub_flow_cut_short_by_an_exception_leaves_no_state(tmp_path: Path) -> None:
    source = flow(
        """
        __flows__ = ("inner", "outer")

        def inner(p):
            p = boom(p)
            return p

        def outer(p):
            try:
                p = inner(p)
            except ValueError:
                p["caught"] = True
            return p
        """
    )

    def boom(p: dict) -> dict:
        raise ValueError("boom")

    _, env = Mesh(tmp_path, source, {"boom": boom}).run({}, route=["start-outer"])
    assert env["payload"] == {"caught": True}
    assert "x-asya-flow" not in env["headers"]
    assert "x-asya-catch" not in env["headers"]


def test_host_failures_are_caught_by_except_exception(tmp_path: Path) -> None:
    from asya.flow.runtime import error_matches

    timeout = {"type": "Timeout", "message": "slow", "mro": ["Timeout"]}
    assert error_matches(timeout, ["Exception"])
    assert not error_matches(timeout, ["ValueError"])


def test_loop_variables_builtins_and_chained_payload_methods(tmp_path: Path) -> None:
    source = flow(
        """
        def f(p):
            if p["go"]:
                for x in p["items"]:
                    p["n"] = pow(2, x)
            p["last"] = x
            p.setdefault("log", []).append(hex(p["n"]))
            while True:
                p = inc(p)
                if p["n"] > 100:
                    return p
        """
    )
    _, env = Mesh(tmp_path, source, {"inc": inc}).run({"go": True, "items": [3, 6]})
    assert env["payload"]["last"] == 6
    assert env["payload"]["log"] == ["0x40"]
    assert env["payload"]["n"] == 101


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "__flows__ = ['a', 'b']\n"
            "def a(p):\n    p = b(p)\n    return p\ndef b(p):\n    p = a(p)\n    return p\n",
            "cycle",
        ),
        (
            "__flows__ = ['review_flow', 'reviewFlow']\n"
            "def review_flow(p):\n    return p\ndef reviewFlow(p):\n    return p\n",
            "share",
        ),
        ("__flows__ = ['nope']\ndef f(p):\n    return p\n", "not a top-level function"),
        ("def f(_rt):\n    return _rt\n", "may not be named"),
        ("def f(p):\n    p['x'] = 1\n    return\n", "returns its payload"),
        ("def f(p):\n    p['x'] = 1\n", "without returning"),
        ("def f(p):\n    p['x'] = open('/etc/passwd')\n    return p\n", r"open\(\) is not allowed"),
    ],
)
def test_more_rejections(source: str, message: str) -> None:
    with pytest.raises(FlowCompileError, match=message):
        compile_source(source, "x.py")


# --- Asya's flows: the rule, the constructs, and the native-Python oracle -----------------------

ASYA_HANDLERS = load(ASYA_FLOWS / "handlers.py", "handlers")


def _asya_mesh(tmp_path: Path, file: str, **options: Any) -> Mesh:
    source = (ASYA_FLOWS / file).read_text()
    program = compile_source(source, file, environ=options.get("environ"))
    return Mesh(tmp_path, source, handler_map(ASYA_HANDLERS, program.handlers), **options)


@pytest.mark.parametrize(
    ("file", "name", "payload"),
    [(f, n, p) for f, n, payloads in ASYA_CASES for p in payloads],
    ids=[f"{n}-{i}" for _, n, payloads in ASYA_CASES for i in range(len(payloads))],
)
def test_asya_flows_end_where_the_flow_run_as_python_ends(
    tmp_path: Path, file: str, name: str, payload: dict[str, Any]
) -> None:
    expected = native(ASYA_FLOWS / file, name, ASYA_HANDLERS, payload, environ={})
    mesh = _asya_mesh(tmp_path, file, environ={})
    end, env = mesh.run(copy.deepcopy(payload), route=[entry(name)])
    assert outcome(end, env) == expected, mesh.hops
    if end == "x-sink":
        assert "x-asya-flow" not in env["headers"] and "x-asya-catch" not in env["headers"]


def test_the_tutorial_flow_with_its_stubs_calls_every_actor(tmp_path: Path) -> None:
    mesh = _asya_mesh(tmp_path, "text_analysis_flow.py")
    assert [f.name for f in mesh.compiled.program.flows] == ["text_analysis_flow"]
    assert mesh.compiled.program.handlers == [
        "clean_text",
        "tokenize",
        "english_sentiment",
        "spanish_sentiment",
        "extract_entities",
    ]
    _, env = mesh.run({"text": "good"})
    assert mesh.calls == ["clean-text", "tokenize", "english-sentiment", "extract-entities"]
    assert env["payload"]["extracted"] is True
    assert mesh.compiled.routers[0] == "start-text-analysis-flow"
    assert "router-text-analysis-flow-line-9-if" in mesh.compiled.routers


def test_if_else_simple_with_handlers_in_the_file_calls_them_as_actors(tmp_path: Path) -> None:
    mesh = _asya_mesh(tmp_path, "sample_flow.py", environ={})
    _, env = mesh.run({"type": "A", "text": "abc"})
    assert mesh.calls == [
        "handler-setup",
        "handler-type-a",
        "text-scorer-score",
        "handler-finalize",
    ]
    assert env["payload"]["score"] == 35 and env["payload"]["level"] == "low"
    routers = (tmp_path / "compiled" / "routers.py").read_text()
    assert "85" in routers and "THRESHOLD" not in routers.split("# --- the flows")[1].replace(
        "#   THRESHOLD = 85", ""
    )


def test_module_constants_read_the_environment_when_the_flow_compiles(tmp_path: Path) -> None:
    payload = {"type": "A", "text": "abcdefghi"}  # score 95 with the default bonus
    expected = native(ASYA_FLOWS / "sample_flow.py", "sample_flow", ASYA_HANDLERS, payload, {})
    assert expected[1]["level"] == "high"
    raised = {"FLOW_THRESHOLD": "1000"}
    _, env = _asya_mesh(tmp_path, "sample_flow.py", environ=raised).run(dict(payload))
    assert env["payload"]["level"] == "low"
    assert native(ASYA_FLOWS / "sample_flow.py", "sample_flow", ASYA_HANDLERS, payload, raised) == (
        "ok",
        env["payload"],
    )


def test_the_flow_is_the_first_function_with_p_state_or_payload_and_a_return_annotation() -> None:
    source = flow(
        """
        from typing import Any

        def helper(x):
            return x

        def unannotated(p):
            return p

        def not_a_payload(item: dict) -> dict:
            return item

        def my_flow(payload: dict[str, Any]) -> dict[str, Any]:
            payload = helper(payload)
            payload = unannotated(payload)
            return payload

        def later_flow(p: dict) -> dict:
            return p
        """
    )
    program = compile_source(source, "rule.py")
    assert [f.name for f in program.flows] == ["my_flow"]
    assert program.handlers == ["helper", "unannotated"]


@pytest.mark.parametrize(
    ("constants", "use", "environ", "value"),
    [
        ("T = int(os.getenv('T', 85))", "T", {}, 85),
        ("T = int(os.getenv('T', 85))", "T", {"T": "7"}, 7),
        ("T = float(os.environ.get('T', '0.5')) * 2", "T", {}, 1.0),
        ("from os import getenv\nT = getenv('T', default='a,b').split(',')", "T", {}, ["a", "b"]),
        ("from os import environ\nT = environ['T'].upper()", "T", {"T": "x"}, "X"),
        (
            "A = 2\nB = A ** 10 + len('abc')\nT = {'k': B, 'ok': B > 1000}",
            "T",
            {},
            {"k": 1027, "ok": True},
        ),
        ("V = 3\nT = f'v{V:02d}-{\"x\"!r}'", "T", {}, "v03-'x'"),
        ("T = ('a', 'b')[1] if os.getenv('X') else None", "T", {}, None),
    ],
)
def test_module_constants_are_evaluated_and_inlined(
    tmp_path: Path, constants: str, use: str, environ: dict[str, str], value: Any
) -> None:
    source = (
        f"import os\n{constants}\n\ndef f(p: dict) -> dict:\n    p['v'] = {use}\n    return p\n"
    )
    program = compile_source(source, "c.py", environ=environ)
    assert program.constants == {use: value}
    _, env = Mesh(tmp_path, source, {}, environ=environ).run({})
    assert env["payload"]["v"] == value


def test_module_code_the_flow_does_not_use_is_left_alone_and_used_code_is_explained() -> None:
    source = flow(
        """
        import logging
        log = logging.getLogger(__name__)
        if __name__ == "__main__":
            DEBUG = True

        def f(p: dict) -> dict:
            p = work(p)
            return p
        """
    )
    assert compile_source(source, "m.py").handlers == ["work"]
    for use, message in [
        ("log", "cannot be computed when the flow compiles"),
        ("DEBUG", "cannot be computed"),
        ("logging", "imported name"),
    ]:
        bad = source.replace("p = work(p)", f"p['x'] = {use}")
        with pytest.raises(FlowCompileError, match=message) as info:
            compile_source(bad, "m.py")
        assert (info.value.line, info.value.column) == (7, 14), str(info.value)
        assert info.value.hint
    with pytest.raises(FlowCompileError, match="'T' is not set when the flow compiles") as info:
        compile_source(
            "import os\nT = os.environ['T']\n"
            "def f(p: dict) -> dict:\n    p['t'] = T\n    return p\n",
            environ={},
        )
    assert info.value.line == 4


def test_a_local_variable_holding_a_payload_value_is_rejected_with_a_hint() -> None:
    source = "def f(p: dict) -> dict:\n    x = p['a']\n    p['b'] = x\n    return p\n"
    with pytest.raises(FlowCompileError) as info:
        compile_source(source, "v.py")
    assert (info.value.line, info.value.column) == (2, 5)
    assert "keeps no variables" in info.value.message
    assert "p['x'] = ..." in info.value.hint


def test_pydantic_state_fields_are_payload_keys(tmp_path: Path) -> None:
    source = flow(
        """
        from pydantic import BaseModel, Field

        class Ticket(BaseModel):
            title: str
            priority: int = 1
            labels: list[str] = Field(default_factory=list)

        def triage(state: Ticket) -> Ticket:
            if state.priority > 2:
                state.labels.append("urgent")
            state = route_ticket(state)
            return state
        """
    )

    def route_ticket(p: dict) -> dict:
        return {**p, "queue": "fast" if "urgent" in p["labels"] else "slow"}

    mesh = Mesh(tmp_path, source, {"route_ticket": route_ticket})
    _, env = mesh.run({"title": "t", "priority": 3})
    assert env["payload"] == {
        "title": "t",
        "priority": 3,
        "labels": ["urgent"],
        "queue": "fast",
    }
    _, env = Mesh(tmp_path, source, {"route_ticket": route_ticket}).run({"title": "t"})
    assert env["payload"]["priority"] == 1 and env["payload"]["queue"] == "slow"


def test_literal_fan_out_items_are_all_actor_calls() -> None:
    bad = "def f(p: dict) -> dict:\n    p['a'] = [f1(p['x']), 2]\n    return p\n"
    with pytest.raises(FlowCompileError, match="every item of a fan-out list") as info:
        compile_source(bad, "l.py")
    assert (info.value.line, info.value.column) == (2, 27)


def test_raise_in_a_flow_and_bare_raise_keep_the_error(tmp_path: Path) -> None:
    source = flow(
        """
        def f(p: dict) -> dict:
            try:
                if p["bad"]:
                    raise ValueError("flow says no")
                p = risky(p)
            except ValueError as e:
                p["caught"] = str(e)
                if p["again"]:
                    raise
            return p
        """
    )
    handlers = handler_map(ASYA_HANDLERS, ["risky"])
    _, env = Mesh(tmp_path, source, handlers).run({"bad": True, "again": False})
    assert env["payload"]["caught"] == "flow says no"
    end, env = Mesh(tmp_path, source, handlers).run({"bad": False, "raise": "value", "again": True})
    assert end == "x-sump"
    assert env["status"]["error"]["type"] == "ValueError"
    assert env["status"]["error"]["message"] == "bad value"
    assert "in risky" in env["status"]["error"]["traceback"], "the actor's own traceback"


def test_return_inside_try_finally_returns_what_return_named(tmp_path: Path) -> None:
    source = flow(
        """
        def f(p: dict) -> dict:
            try:
                p["in"] = True
                return p
            finally:
                p["finally"] = True
                p = cleanup(p)
        """
    )
    (tmp_path / "fin.py").write_text(source)
    expected = native(tmp_path / "fin.py", "f", ASYA_HANDLERS, {})
    assert expected == ("ok", {"in": True, "finally": True})
    mesh = Mesh(tmp_path, source, handler_map(ASYA_HANDLERS, ["cleanup"]))
    assert outcome(*mesh.run({})) == expected
    assert mesh.calls == ["cleanup"]


def test_a_loop_that_never_exits_compiles_with_the_check_disabled(tmp_path: Path) -> None:
    source = "def agent(p: dict) -> dict:\n    while True:\n        p = inc(p)\n"
    with pytest.raises(FlowCompileError, match="can never exit"):
        compile_source(source, "a.py")
    program = compile_source(source, "a.py", check_infinite_loops=False)
    assert program.flows[0].name == "agent"
    end, env = Mesh(
        tmp_path, source, {"inc": inc}, check_infinite_loops=False, max_iterations=5
    ).run({})
    assert end == "x-sump"
    assert env["status"]["error"]["type"] == "routers.FlowLoopLimitExceeded"


def test_a_loop_whose_condition_nothing_changes_is_warned_about() -> None:
    source = flow(
        """
        def f(p: dict) -> dict:
            while p["n"] < 3:
                p["m"] = 1
            return p
        """
    )
    (warning,) = compile_source(source, "w.py").warnings
    assert warning.startswith("w.py:2:5: possible infinite loop")
    assert compile_source(source, "w.py", check_infinite_loops=False).warnings == []
    changed = source.replace('p["m"] = 1', 'p["n"] += 1')
    assert compile_source(changed, "w.py").warnings == []


def test_except_names_match_qualified_error_types() -> None:
    from asya.flow.runtime import error_matches

    mine = {"type": "handlers.FlowFailure", "mro": ["RuntimeError", "Exception"]}
    assert error_matches(mine, ["FlowFailure"])
    assert error_matches(mine, ["handlers.FlowFailure"])
    assert error_matches(mine, ["RuntimeError"])
    assert not error_matches(mine, ["Failure"]), "a whole dotted part, not a substring"
    http = {
        "type": "requests.exceptions.HTTPError",
        "mro": ["requests.exceptions.RequestException", "OSError", "Exception"],
    }
    assert error_matches(http, ["RequestException"]) and error_matches(http, ["OSError"])
    assert error_matches({"type": "HTTPError", "mro": []}, ["requests.exceptions.HTTPError"])


def test_routers_py_runs_alone_with_the_standard_library(tmp_path: Path) -> None:
    import subprocess
    import sys

    compile_file(ASYA_FLOWS / "text_analysis_flow.py", tmp_path / "compiled")
    image = tmp_path / "image"  # COPY compiled/routers.py /app/routers.py
    image.mkdir()
    (image / "routers.py").write_text((tmp_path / "compiled" / "routers.py").read_text())
    script = (
        "import json, os, routers; print('Routers loaded');"
        "os.environ['ASYA_HANDLER_CLEAN_TEXT'] = 'text_handlers.clean_text';"
        "os.environ['ASYA_HANDLER_TOKENIZE'] = 'text_handlers.tokenize';"
        "env = {'id': '1', 'route': {'prev': [], 'curr': 'start-text-analysis-flow',"
        " 'next': []}, 'headers': {}, 'payload': {'text': 'x'}};"
        "print(json.dumps(routers.dispatch(env)['route']['next']))"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-E", "-c", script],  # no site-packages: asya is not importable
        cwd=image,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    loaded, route = proc.stdout.splitlines()
    assert loaded == "Routers loaded"
    assert json.loads(route) == [
        "clean-text",
        "tokenize",
        "router-text-analysis-flow-line-9-if",
    ]


def test_cli_takes_the_tutorials_flags(tmp_path: Path) -> None:
    runner = CliRunner()
    source = tmp_path / "text_analysis_flow.py"
    source.write_text((ASYA_FLOWS / "text_analysis_flow.py").read_text())
    out = tmp_path / "compiled"
    args = ["flow", "compile", str(source), "--output-dir", str(out), "--plot"]
    args += ["--plot-width", "50", "--overwrite", "--verbose", "--disable-infinite-loop-check"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Successfully compiled flow to" in result.output
    assert "router router-text-analysis-flow-line-9-if" in result.output
    assert (out / "flow.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.glob("*.py")) == ["routers.py"]
    result = runner.invoke(main, [*args[:5], "-v", "--overwrite"])
    assert result.exit_code == 0 and "router start-text-analysis-flow" in result.output
    # --plot-width is the maximum width of a label, in characters.
    narrow = runner.invoke(main, [*args[:5], "--overwrite", "--plot-width", "12"])
    assert narrow.exit_code == 0, narrow.output
    dot = (out / "flow.dot").read_text()
    labels = re.findall(r'label="((?:[^"\\]|\\.)*)"', dot)
    lines = [part for label in labels for part in label.split("\\n")]
    assert "p['language'] == 'en'" not in dot and max(len(x) for x in lines) <= 12
    assert runner.invoke(main, [*args[:5], "--plot-width", "0"]).exit_code == 2
    # The check the flag disables.
    loop = tmp_path / "loop.py"
    loop.write_text("def f(p: dict) -> dict:\n    while True:\n        p = g(p)\n")
    result = runner.invoke(main, ["flow", "validate", str(loop)])
    assert result.exit_code == 1 and "--disable-infinite-loop-check" in result.output
    result = runner.invoke(main, ["flow", "validate", str(loop), "--disable-infinite-loop-check"])
    assert result.exit_code == 0, result.output


def _compare(tmp_path: Path, source: str, name: str, handlers: dict[str, Any], payloads: list[Any]):
    path = tmp_path / "edge_flow.py"
    path.write_text(source)
    for payload in payloads:
        expected = native(path, name, ASYA_HANDLERS, payload, environ={})
        mesh = Mesh(tmp_path, source, handlers)
        assert outcome(*mesh.run(copy.deepcopy(payload))) == expected, payload


def test_marked_flows_and_a_return_in_except_with_a_finally_that_fans_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    utils = types.ModuleType("_asya_utils")
    utils.flow = utils.actor = lambda f: f  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_asya_utils", utils)
    source = flow(
        """
        import asyncio

        from _asya_utils import actor, flow

        @flow
        async def pipeline(p: dict) -> dict:
            p["log"] = []
            try:
                p = await risky(p)
                p["log"].append("ok")
            except KeyError:
                p["log"].append("caught")
                p = await audit(p)
                return p
            finally:
                p["log"].append("fin")
                p["answers"] = await asyncio.gather(search_web(p["q"]), search_docs(p["q"]))
            p["after"] = True
            return p

        @actor
        async def risky(p: dict) -> dict:
            return p
        """
    )
    names = ["risky", "audit", "search_web", "search_docs"]
    assert compile_source(source, "m.py").handlers == names
    payloads = [{"q": "a"}, {"q": "ab", "raise": "key"}, {"q": "x", "raise": "value"}]
    _compare(tmp_path, source, "pipeline", handler_map(ASYA_HANDLERS, names), payloads)


def test_module_handlers_module_instances_and_break_in_try_finally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "handlers", ASYA_HANDLERS)
    source = flow(
        """
        import handlers
        from handlers import TextScorer

        SCORER = TextScorer()
        LIMIT = 3

        def loop_flow(state: dict) -> dict:
            state["round"] = 0
            state["seen"] = []
            while state["round"] < LIMIT:
                state["round"] += 1
                if state["round"] == 2:
                    continue
                try:
                    state["batch"] = [handlers.square(x) for x in state.get("items", [])]
                    state = handlers.risky(state)
                except (KeyError, ValueError) as e:
                    state["seen"].append(str(e))
                    state["raise"] = None
                    break
                finally:
                    state["seen"].append(state["round"])
            state["score"] = len(state["seen"])
            state = SCORER.score(state)
            return state
        """
    )
    program = compile_source(source, "m.py")
    assert program.handlers == ["handlers.square", "handlers.risky", "TextScorer.score"]
    stubs = {
        "handlers.square": ASYA_HANDLERS.square,
        "handlers.risky": ASYA_HANDLERS.risky,
        "TextScorer.score": ASYA_HANDLERS.TextScorer().score,
    }
    payloads = [{"items": [1, 2]}, {"items": [3], "raise": "key"}, {"raise": "value"}]
    _compare(tmp_path, source, "loop_flow", stubs, [*payloads, {"raise": "custom"}])
