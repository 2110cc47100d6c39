"""Asya's own manifests (`tests/fixtures/asya-manifests/`, copied from its tutorial and blog) in
the SDK: they pass the AsyncActor schema as written, and `asya dev` runs the tutorial's
`text-processor` (Asya's `workload` form) with the tutorial's handler, on the native Python
runtime, as Asya deploys it. A transport this build does not run (pubsub) is refused by the host,
naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asya.host import find_host_binary
from asya.manifest import _problems, effective_runtime, load_actors, resolve_workload

ROOT = Path(__file__).resolve().parents[2]
ASYA = ROOT / "tests" / "fixtures" / "asya-manifests"
MANIFESTS = sorted(p for p in ASYA.glob("*.yaml") if p.name != "flavors.yaml")

# The tutorial's handler, as written ("Local Development: 1. Write Handler").
TEXT_PROCESSOR = """
def process(payload: dict) -> dict:
    text = payload.get("text", "")
    return {
        **payload,
        "processed": text.upper(),
        "length": len(text)
    }
"""


def actors_in(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "AsyncActor"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_asyas_manifests_pass_the_schema_as_written(path: Path) -> None:
    for doc in actors_in(path):
        assert _problems(doc) == []
        spec = resolve_workload(doc["spec"])
        assert effective_runtime(spec) == "python"
        assert spec["handler"]


def pipeline(tmp_path: Path, transport: str | None = None) -> Path:
    """The tutorial's actor, its `transport: sqs` line replaced by `transport` (None: dropped)."""
    root = tmp_path / "tutorial"
    (root / "src").mkdir(parents=True)
    (root / "src" / "__init__.py").write_text("")
    (root / "src" / "text_processor.py").write_text(TEXT_PROCESSOR)
    (root / "actors").mkdir()
    lines = []
    for line in (ASYA / "tutorial-text-processor.yaml").read_text().splitlines(keepends=True):
        if line.lstrip().startswith("transport:"):
            if transport is None:
                continue
            line = line[: len(line) - len(line.lstrip())] + f"transport: {transport}\n"
        lines.append(line)
    text = "".join(lines)
    (root / "actors" / "text-processor.yaml").write_text(text)
    (root / "pipeline.yaml").write_text("route: [text-processor]\n")
    return root


def asya(*args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "asya"
    return subprocess.run(
        [str(cli), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_the_tutorials_actor_runs_in_asya_dev(tmp_path: Path) -> None:
    root = pipeline(tmp_path)
    (actor,) = load_actors(root / "actors")
    assert (actor.handler, actor.runtime) == ("src.text_processor.process", "python")
    proc = asya("dev", str(root), "--payload", '{"text": "hello world", "request_id": "123"}')
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)
    assert final["status"]["phase"] == "succeeded"
    # The tutorial's own test of this handler, on the payload that went through the actor.
    assert final["payload"] == {
        "text": "hello world",
        "request_id": "123",
        "processed": "HELLO WORLD",
        "length": 11,
    }


def test_a_transport_this_build_does_not_run_is_named_in_the_refusal(tmp_path: Path) -> None:
    root = pipeline(tmp_path, transport="pubsub")
    proc = asya("dev", str(root), "--payload", '{"text": "x"}')
    assert proc.returncode != 0
    assert "spec.transport: must be nats, rabbitmq or sqs" in proc.stderr, proc.stderr
    assert "(got pubsub)" in proc.stderr, proc.stderr


def test_the_injected_runtime_needs_nothing_from_asya_in_the_image(tmp_path: Path) -> None:
    """What the operator's init container does (`asya-host install-runtime DIR`), then the
    tutorial's actor served by a Python interpreter with no asya installed, the runtime found
    only through `PYTHONPATH=DIR`, as in the rendered `asya-runtime` container."""
    # A user's image: Python's standard library, no site-packages (so no asya).
    bare = str(tmp_path / "bare-python3")
    Path(bare).write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    os.chmod(bare, 0o755)
    probe = subprocess.run([bare, "-c", "import asya"], capture_output=True, check=False)
    assert probe.returncode != 0, f"{bare} has asya installed: not a bare image"
    host = find_host_binary()
    injected = tmp_path / "opt-asya"
    subprocess.run([str(host), "install-runtime", str(injected)], check=True, timeout=30)
    root = pipeline(tmp_path)
    proc = subprocess.run(
        [
            str(host),
            "dev",
            "--manifests",
            str(root / "actors"),
            "--python-actor",
            f"text-processor={root}",
            "--python",
            bare,
            "--route",
            "text-processor",
            "--payload",
            '{"text": "hi"}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(injected)},
    )
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout)
    assert final["payload"]["processed"] == "HI"
