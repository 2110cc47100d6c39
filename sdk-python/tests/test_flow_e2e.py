"""End to end: flows compiled, routers and handlers built by `asya build` (componentize-py), and
run in the real host through `asya dev` on the embedded transport, fan-in by the host's
aggregator. Each test sends a batch of payloads through one flow and checks every result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flow_oracle import ASYA_CASES, ASYA_FLOWS, entry, load, native, outcome

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "flows"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the fixture, so compiled routers and builds never touch the source tree."""
    root = tmp_path_factory.mktemp("flows") / "flows"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns(".asya", "__pycache__"))
    return root


def run_flow(pipeline: Path, entry: str, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cli = Path(sys.executable).parent / "asya"
    proc = subprocess.run(
        [str(cli), "dev", str(pipeline), "--route", entry, "--input", "-", "--no-hops"],
        input="".join(json.dumps(p) + "\n" for p in payloads),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == len(payloads), proc.stderr[-3000:]
    return lines


def test_every_branch_of_if_elif_else(pipeline: Path) -> None:
    texts = ["hello there", "hola el mundo", "héllo"]
    results = run_flow(pipeline, "start-review", [{"text": t} for t in texts])
    assert [r["status"]["phase"] for r in results] == ["succeeded"] * 3
    en, es, other = (r["payload"] for r in results)
    assert (en["language"], en["sentiment"]) == ("en", "en:HELLO THERE")
    assert (es["language"], es["sentiment"]) == ("es", "es:hola el mundo")
    assert (other["language"], other["sentiment"]) == ("other", "neutral")
    assert all(p["reviewed"] for p in (en, es, other))
    assert results[0]["route"]["prev"] == [
        "start-review",
        "detect",
        "router-review-line-8-if",
        "english",
        "router-review-line-14-seq",
    ]
    assert "english" not in results[1]["route"]["prev"]
    assert all("x-asya-flow" not in r["headers"] for r in results)


def test_loop_counts_break_continue_and_class_handlers(pipeline: Path) -> None:
    payloads = [
        {"limit": 7},
        {"limit": 7, "stop_at": 3},
        {"limit": 0},
        {"limit": 2, "words": ["ab", "skip", "abcd"]},
    ]
    results = run_flow(pipeline, "start-loops", payloads)
    got = [(r["payload"]["n"], r["payload"]["odd"], r["payload"].get("bumps", 0)) for r in results]
    assert got == [(7, 4, 7), (3, 1, 3), (0, 0, 0), (2, 1, 2)]
    assert results[3]["payload"]["scores"] == [1.0, 2.0]  # Scorer() default weight 0.5
    assert results[3]["route"]["prev"].count("scorer") == 2


def test_try_except_by_type_and_mro_and_early_return(pipeline: Path) -> None:
    payloads = [
        {"raise": None},
        {"raise": "key"},
        {"raise": "index"},
        {"raise": "value"},
        {"raise": "key", "early": True},
    ]
    ok, key, index, value, early = run_flow(pipeline, "start-guarded", payloads)
    assert ok["payload"]["after_risky"] and ok["payload"]["bumps"] == 1
    assert key["payload"]["caught"].startswith("KeyError: ")
    assert "no such key" in key["payload"]["caught"]
    assert "after_risky" not in key["payload"] and key["payload"]["bumps"] == 1
    assert index["payload"]["caught"] == "LookupError via IndexError"
    assert value["status"]["phase"] == "failed"
    assert value["route"]["curr"] == "x-sump"
    assert value["status"]["error"]["type"] == "ValueError"
    assert "bad value" in value["status"]["error"]["message"]
    assert "bump" not in early["route"]["prev"]
    assert "x-asya-catch" not in ok["headers"] and "x-asya-catch" not in key["headers"]


@pytest.mark.parametrize("size", [0, 1, 50])
def test_fan_out_and_fan_in_merge_in_order(pipeline: Path, size: int) -> None:
    (result,) = run_flow(pipeline, "start-fan", [{"text": "Mixed", "items": list(range(size))}])
    assert result["status"]["phase"] == "succeeded", result["status"]
    payload = result["payload"]
    assert payload["squares"] == [{"item": i, "square": i * i} for i in range(size)]
    assert payload["total"] == sum(i * i for i in range(size))
    assert [p["sentiment"] for p in payload["pair"]] == ["en:MIXED", "es:mixed"]
    assert payload["checked"] == []


def test_a_failing_fan_out_item_is_caught_and_none_items_merge_as_null(pipeline: Path) -> None:
    payloads = [
        {"text": "x", "items": [1, None, 2], "check": [3, "boom", 4]},
        {"text": "y", "items": ["boom"]},
    ]
    caught, failed = run_flow(pipeline, "start-fan", payloads)
    squares = caught["payload"]["squares"]
    assert squares == [{"item": 1, "square": 1}, None, {"item": 2, "square": 4}]
    assert "fan-out item 1 (square): cannot square boom" in caught["payload"]["fan_error"]
    assert "checked" not in caught["payload"]
    assert failed["status"]["phase"] == "failed"
    assert failed["route"]["curr"] == "x-sump"
    assert "cannot square boom" in failed["status"]["error"]["message"]


def test_many_flows_at_once_without_crosstalk(pipeline: Path) -> None:
    payloads = [
        {"text": f"hola el {i}" if i % 3 == 0 else f"msg {i}", "items": list(range(i % 7)), "k": i}
        for i in range(50)
    ]
    results = run_flow(pipeline, "start-everything", payloads)
    for i, result in enumerate(results):
        payload = result["payload"]
        assert result["status"]["phase"] == "succeeded", result["status"]
        assert payload["k"] == i
        assert payload["squares"] == [{"item": j, "square": j * j} for j in range(i % 7)]
        assert payload["language"] == ("es" if i % 3 == 0 else "en")
        assert payload["pair"][0]["k"] == i and payload["pair"][1]["k"] == i
        assert payload["bumps"] == 1 and payload["risky"] == "ok"
    shouted = run_flow(pipeline, "start-shout", [{"text": "second file"}])
    assert shouted[0]["payload"] == {
        "text": "second file",
        "sentiment": "en:SECOND FILE",
        "shouted": True,
    }


def test_compile_errors_stop_asya_dev_with_the_location(pipeline: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(pipeline, broken, ignore=shutil.ignore_patterns(".asya"))
    (broken / "second.py").write_text("def shout(p):\n    p = english(detect(p))\n    return p\n")
    cli = Path(sys.executable).parent / "asya"
    proc = subprocess.run(
        [str(cli), "dev", str(broken), "--payload", "{}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert "second.py:2:" in proc.stdout + proc.stderr
    assert "nested calls" in proc.stdout + proc.stderr


# --- Asya-style flow files (tests/fixtures/asya-flows), against the flow run as Python ---------


@pytest.fixture(scope="module")
def asya_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("asya-flows") / "asya-flows"
    shutil.copytree(ASYA_FLOWS, root, ignore=shutil.ignore_patterns(".asya", "__pycache__"))
    return root


@pytest.mark.parametrize(
    ("file", "name", "payloads"), ASYA_CASES, ids=[name for _, name, _ in ASYA_CASES]
)
def test_asya_flows_on_the_host_end_where_python_ends(
    asya_pipeline: Path,
    file: str,
    name: str,
    payloads: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("FLOW_THRESHOLD", "FLOW_MAX_ROUNDS"):
        monkeypatch.delenv(var, raising=False)  # the constants' defaults, as `native` sees them
    handlers = load(ASYA_FLOWS / "handlers.py", "handlers")
    results = run_flow(asya_pipeline, entry(name), payloads)
    for payload, result in zip(payloads, results, strict=True):
        expected = native(ASYA_FLOWS / file, name, handlers, payload, environ={})
        end = "x-sink" if result["status"]["phase"] == "succeeded" else "x-sump"
        assert outcome(end, result) == expected, (payload, result["status"])
        if end == "x-sink":
            assert "x-asya-flow" not in result["headers"], result["headers"]
            assert "x-asya-catch" not in result["headers"], result["headers"]


def test_the_tutorial_flow_on_the_host_calls_each_stub_actor(asya_pipeline: Path) -> None:
    (en,) = run_flow(asya_pipeline, "start-text-analysis-flow", [{"text": "good day"}])
    assert en["route"]["prev"][:3] == ["start-text-analysis-flow", "clean-text", "tokenize"]
    assert "english-sentiment" in en["route"]["prev"]
    assert "extract-entities" in en["route"]["prev"]
    assert en["payload"]["sentiment"] == "positive" and en["payload"]["extracted"] is True
