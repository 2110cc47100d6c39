"""Asya's own manifests (tutorial and blog, `tests/fixtures/asya-manifests/`), rendered by
`asya-operator render` as the operator would apply them: Asya's `workload` and `flavor` forms
become a `runtime: python` actor on the user's image, in pods with Asya's container names, and
every object passes the real Kubernetes schemas. The tutorial's `transport: sqs` is refused
with a message naming the transport until this project runs SQS."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from k8s_checks import ROOT, documents, run_operator, validate_kubernetes

ASYA = ROOT / "tests" / "fixtures" / "asya-manifests"
FLAVORS = ASYA / "flavors.yaml"
TUTORIAL = sorted(ASYA.glob("tutorial-*.yaml"))


def render(*files: Path) -> list[dict]:
    args = ["render", "--flavor", str(FLAVORS)]
    for file in files:
        args += ["-f", str(file)]
    return documents(run_operator(*args).stdout)


def pods(docs: list[dict]) -> dict[str, dict]:
    """Pod spec of each actor's Deployment, by actor name."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] == "Deployment"
    }


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def check_asya_pod(pod: dict, image: str, handler: str) -> dict:
    names = [c["name"] for c in pod["containers"]]
    assert names == ["asya-runtime", "asya-sidecar"]
    runtime = pod["containers"][0]
    assert runtime["image"] == image
    assert runtime["command"] == ["python3", "-m", "asya.runtime"]
    assert env_of(runtime)["ASYA_HANDLER"] == handler
    assert [c["name"] for c in pod["initContainers"]] == ["asya-install-runtime"]
    return runtime


def test_the_blogs_manifests_apply_unchanged():
    docs = render(ASYA / "blog-my-model.yaml", ASYA / "blog-model-caller.yaml")
    for doc in docs:
        if doc["kind"] != "ScaledObject":
            validate_kubernetes(doc)
    by_actor = pods(docs)
    # `flavor: gpu-inference` + image + handler: a python actor with the flavor's GPU settings.
    runtime = check_asya_pod(by_actor["my-model"], "my-model:latest", "model.predict")
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert by_actor["my-model"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    check_asya_pod(
        by_actor["model-caller"], "call-model:latest", "handler.answer_questions"
    )
    manifests = {
        d["metadata"]["name"]: yaml.safe_load(d["data"]["actor.yaml"])
        for d in docs
        if d["kind"] == "ConfigMap"
    }
    caller = manifests["model-caller-asya"]["spec"]
    assert caller["runtime"] == "python"
    assert caller["resiliency"]["actorTimeout"] == "300s"
    assert caller["resiliency"]["nonRetryableErrors"] == ["ValueError"]  # llm-resilient
    assert caller["sandbox"]["maxInFlight"] == 64
    scaled = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert scaled["model-caller"]["spec"]["maxReplicaCount"] == 3
    assert scaled["my-model"]["spec"]["maxReplicaCount"] == 10


@pytest.mark.parametrize("path", TUTORIAL, ids=lambda p: p.name)
def test_the_tutorials_sqs_transport_is_refused_by_name(path: Path):
    result = run_operator("render", "-f", str(path), check=False)
    assert result.returncode != 0
    assert "spec.transport: must be nats" in result.stderr, result.stderr
    assert "(got sqs)" in result.stderr, result.stderr


def without_transport(path: Path, tmp_path: Path) -> Path:
    """The manifest with its `transport:` line dropped (the only change)."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.lstrip().startswith("transport:")]
    assert len(kept) < len(lines)
    out = tmp_path / path.name
    out.write_text("".join(kept))
    return out


def test_the_tutorials_workloads_become_python_actors(tmp_path: Path):
    files = [without_transport(path, tmp_path) for path in TUTORIAL]
    docs = render(*files)
    for doc in docs:
        if doc["kind"] != "ScaledObject":
            validate_kubernetes(doc)
    by_actor = pods(docs)
    check_asya_pod(
        by_actor["text-processor"], "my-processor:v1", "src.text_processor.process"
    )
    router = check_asya_pod(
        by_actor["start-text-analysis-flow"],
        "my-flow-routers:v1",
        "routers.start_text_analysis_flow",
    )
    env = env_of(router)
    assert env["ASYA_HANDLER_MODE"] == "envelope"
    # The routers' resolve() reads the handler-to-actor mappings from the runtime's env.
    assert env["ASYA_HANDLER_CLEAN_TEXT"] == "text_handlers.clean_text"
    assert (
        env["ASYA_HANDLER_ROUTER_TEXT_ANALYSIS_FLOW_LINE_15_SEQ"]
        == "routers.router_text_analysis_flow_line_15_seq"
    )
    gpu = check_asya_pod(
        by_actor["english-sentiment"],
        "my-sentiment-model:latest",
        "sentiment.EnglishSentiment.process",
    )
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    scaled = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    # minReplicas / maxReplicas / queueLength, the tutorial's names.
    spec = scaled["text-processor"]["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 50)
    assert spec["triggers"][0]["metadata"]["lagThreshold"] == "5"


def test_a_workload_field_that_cannot_be_honoured_is_refused(tmp_path: Path):
    doc = yaml.safe_load((ASYA / "tutorial-text-processor.yaml").read_text())
    del doc["spec"]["transport"]
    doc["spec"]["workload"]["template"]["spec"]["containers"].append(
        {"name": "helper", "image": "busybox"}
    )
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run_operator("render", "-f", str(path), check=False)
    assert result.returncode != 0
    assert "must be asya-runtime" in result.stderr, result.stderr
