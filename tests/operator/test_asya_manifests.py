"""Asya's own manifests (tutorial and blog, `tests/fixtures/asya-manifests/`), rendered by
`asya-operator render` as the operator would apply them: Asya's `workload` and `flavor` forms
become a `runtime: python` actor on the user's image, in pods with Asya's container names, and
every object passes the real Kubernetes schemas. The tutorial's `transport: sqs` renders SQS
actors (KEDA's aws-sqs-queue scaler); a transport this build does not run (pubsub) is refused
with a message naming it."""

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


def test_the_tutorials_manifests_render_as_written_on_sqs(
    scaled_object_schema, trigger_authentication_schema
):
    docs = render(*TUTORIAL)
    auths = {}
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            scaled_object_schema.validate(doc)
        elif doc["kind"] == "TriggerAuthentication":
            trigger_authentication_schema.validate(doc)
            auths[doc["metadata"]["name"]] = doc
        else:
            validate_kubernetes(doc)
    scaled = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert scaled
    for name, so in scaled.items():
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "aws-sqs-queue"
        namespace = so["metadata"]["namespace"]
        assert trigger["metadata"]["queueURL"] == f"asya-{namespace}-{name}"
        assert auths[trigger["authenticationRef"]["name"]]["spec"] == {
            "podIdentity": {"provider": "aws"}
        }
    for pod in pods(docs).values():
        host = pod["containers"][-1]
        assert env_of(host)["ASYA_TRANSPORT"] == "sqs"
        assert "--no-create" not in host["args"]


@pytest.mark.parametrize("path", TUTORIAL, ids=lambda p: p.name)
def test_a_transport_this_build_does_not_run_is_refused_by_name(
    path: Path, tmp_path: Path
):
    text = path.read_text().replace("transport: sqs", "transport: pubsub")
    assert "transport: pubsub" in text
    changed = tmp_path / path.name
    changed.write_text(text)
    result = run_operator("render", "-f", str(changed), check=False)
    assert result.returncode != 0
    assert "spec.transport: must be nats, rabbitmq or sqs" in result.stderr, (
        result.stderr
    )
    assert "(got pubsub)" in result.stderr, result.stderr


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
