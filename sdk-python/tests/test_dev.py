"""End to end: `asya dev` builds the example pipeline and runs it in the real host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = "examples/text-pipeline"


def asya(repo: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "asya"
    return subprocess.run(
        [str(cli), *args],
        cwd=repo,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_pipeline_runs_with_one_command_and_shows_each_hop(repo: Path) -> None:
    proc = asya(repo, "dev", EXAMPLE, "--payload", '{"text": "Hello World"}')
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)
    assert final["status"]["phase"] == "succeeded"
    assert final["route"]["curr"] == "x-sink"
    # The judge found the score uncertain and inserted refine → judge before postprocess.
    assert final["route"]["prev"] == [
        "preprocess",
        "classify",
        "judge",
        "refine",
        "judge",
        "postprocess",
    ]
    payload = final["payload"]
    assert payload["clean_text"] == "hello world"
    assert payload["label"] == "positive"
    assert payload["model_loads"] == 1
    assert payload["summary"].startswith("positive")
    for hop in [
        "client → preprocess",
        "preprocess → classify",
        "judge → refine",
        "postprocess → x-sink",
    ]:
        assert hop in proc.stderr, proc.stderr


def test_batch_from_stdin_writes_json_lines_in_input_order(repo: Path) -> None:
    texts = ["I love this wonderful day", "awful terrible broken sad", "plain words", "héllo 🌍"]
    stdin = "\n".join(json.dumps({"text": t}) for t in texts) + "\n"
    proc = asya(repo, "dev", EXAMPLE, "--input", "-", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["payload"]["text"] for r in lines] == texts
    assert lines[0]["payload"]["label"] == "positive"
    assert lines[1]["payload"]["label"] == "negative"
    assert all(r["status"]["phase"] == "succeeded" for r in lines)


def test_none_and_raise_routes(repo: Path) -> None:
    proc = asya(
        repo, "dev", EXAMPLE, "--route", "drop-empty,postprocess", "--payload", '{"text": "   "}'
    )
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)
    assert final["route"]["prev"] == ["drop-empty"]
    assert final["status"]["reason"] == "Completed"

    proc = asya(repo, "dev", EXAMPLE, "--route", "require-language", "--payload", '{"text": "hi"}')
    assert proc.returncode == 2, "a message that failed is a non-zero exit"
    final = json.loads(proc.stdout)
    assert final["status"]["reason"] == "HandlerError"
    assert final["status"]["error"]["type"] == "ValueError"
    assert "require_language" in final["status"]["error"]["traceback"]


def test_bad_input_gets_a_clear_message(repo: Path) -> None:
    proc = asya(repo, "dev", EXAMPLE, "--payload", "{not json")
    assert proc.returncode == 1
    assert "not JSON" in proc.stderr
    proc = asya(repo, "dev", EXAMPLE, "--payload", "[1, 2]")
    assert "must be a JSON object" in proc.stderr
    proc = asya(repo, "dev", EXAMPLE, "--route", "nobody", "--payload", "{}")
    assert proc.returncode == 1
    assert "no actor named 'nobody'" in proc.stderr


def test_gpu_example_mixes_a_native_python_actor_with_a_wasm_actor(repo: Path) -> None:
    proc = asya(repo, "dev", "examples/gpu-embedder", "--payload", '{"text": "hello gpu"}')
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)
    assert final["route"]["prev"] == ["embed", "summarize"]
    payload = final["payload"]
    assert payload["dims"] == 16
    assert payload["device"] in ("python", "cpu", "cuda")
    assert abs(sum(v * v for v in payload["embedding"]) - 1.0) < 1e-3
