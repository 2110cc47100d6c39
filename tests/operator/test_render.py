"""`asya-operator render` on the example manifests: every object it would apply is validated
against the real Kubernetes schemas (kubernetes-validate) or KEDA's ScaledObject schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from k8s_checks import ROOT, render, run_operator, validate_kubernetes

TEXT_PIPELINE = sorted((ROOT / "examples" / "text-pipeline" / "actors").glob("*.yaml"))
GPU = sorted((ROOT / "examples" / "gpu-embedder" / "actors").glob("*.yaml"))
UID = "5e0b2f4c-3a6d-4b8e-9c1f-0d2e3f4a5b6c"


def by_kind(docs):
    out: dict[str, list[dict]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def validate_all(docs, scaled_object_schema):
    assert docs
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            scaled_object_schema.validate(doc)
            metadata = doc["spec"]["triggers"][0]["metadata"]
            # What KEDA's nats-jetstream scaler needs to find the consumer's lag.
            for key in (
                "natsServerMonitoringEndpoint",
                "account",
                "stream",
                "consumer",
            ):
                assert metadata[key], key
            assert int(metadata["lagThreshold"]) >= 1
        else:
            validate_kubernetes(doc)


@pytest.mark.parametrize("path", TEXT_PIPELINE + GPU, ids=lambda p: p.name)
def test_examples_render_to_valid_objects(path: Path, scaled_object_schema):
    docs = render(path, uid=UID)
    validate_all(docs, scaled_object_schema)
    for doc in docs:
        owner = doc["metadata"]["ownerReferences"][0]
        assert owner == {
            "apiVersion": "asya.sh/v1alpha1",
            "kind": "AsyncActor",
            "name": doc["metadata"]["labels"]["asya.sh/actor"],
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def test_wasm_actor_is_the_host_alone():
    docs = by_kind(render(ROOT / "examples/text-pipeline/actors/classify.yaml"))
    (deployment,) = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (host,) = pod["containers"]
    assert host["name"] == "asya-sidecar"
    assert host["args"][:5] == [
        "run",
        "--manifests",
        "/etc/asya/actors",
        "--no-create",
        "--http",
    ]
    env = {e["name"]: e["value"] for e in host["env"]}
    assert env["ASYA_HANDLER"] == "classifier.TextClassifier.process"
    assert env["ASYA_HANDLER_MODE"] == "payload"
    assert host["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (config_map,) = docs["ConfigMap"]
    manifest = yaml.safe_load(config_map["data"]["actor.yaml"])
    assert (
        manifest["spec"]["component"]
        == "oci://localhost:5000/text-pipeline/classify:v1"
    )
    assert manifest["metadata"] == {"name": "classify", "namespace": "text-pipeline"}
    (scaled,) = docs["ScaledObject"]
    assert scaled["spec"]["minReplicaCount"] == 1
    assert scaled["spec"]["maxReplicaCount"] == 10
    assert scaled["spec"]["triggers"][0]["metadata"]["stream"] == "ASYA_TEXT_PIPELINE"


def test_python_actor_runs_the_runtime_with_the_host_as_sidecar():
    docs = by_kind(render(ROOT / "examples/gpu-embedder/actors/embed.yaml"))
    (deployment,) = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    handler, host = pod["containers"]
    assert (handler["name"], host["name"]) == ("asya-runtime", "asya-sidecar")
    assert handler["image"] == "registry.local/gpu-embedder:v1"
    assert handler["command"] == ["python3", "-m", "asya.runtime"]
    # The runtime is written into the pod by the host image: the user's image needs no asya.
    (install,) = pod["initContainers"]
    assert install["args"] == ["install-runtime", "/opt/asya"]
    assert install["image"] == host["image"]
    env = {e["name"]: e["value"] for e in handler["env"]}
    assert env["ASYA_RUNTIME_SOCKET"] == "/var/run/asya/runtime.sock"
    assert env["PYTHONPATH"] == "/opt/asya"
    assert env["ASYA_HANDLER"] == "embedder.Embedder.process"
    mounts = {
        c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        for c in (handler, host)
    }
    assert (
        mounts["asya-runtime"]["runtime-socket"]
        == mounts["asya-sidecar"]["runtime-socket"]
        == "/var/run/asya"
    )
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["runtime-socket"] == {"name": "runtime-socket", "emptyDir": {}}
    assert handler["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # Scale to zero while the queue is empty.
    (scaled,) = docs["ScaledObject"]
    assert scaled["spec"]["minReplicaCount"] == 0
    assert "replicas" not in deployment["spec"]


def write(tmp_path: Path, name: str, docs) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return path


def chart_flavors(tmp_path: Path) -> Path:
    values = yaml.safe_load((ROOT / "charts/asya/values.yaml").read_text())
    return write(
        tmp_path,
        "flavors.yaml",
        [
            {
                "apiVersion": "asya.sh/v1alpha1",
                "kind": "Flavor",
                "metadata": {"name": n},
                "spec": s,
            }
            for n, s in values["flavors"].items()
        ],
    )


def actor(name: str, **spec) -> dict:
    return {
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "AsyncActor",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": spec,
    }


def test_chart_flavors_merge_into_actors(tmp_path: Path, scaled_object_schema):
    flavors = chart_flavors(tmp_path)
    llm = write(
        tmp_path,
        "llm.yaml",
        [
            actor(
                "summarize",
                image="registry.local/llm:v1",
                handler="llm.summarize",
                flavors=["gpu-inference", "llm-resilient"],
                env={"MODEL": "tiny"},
            )
        ],
    )
    docs = render(llm, flavors=(flavors,), uid=UID)
    validate_all(docs, scaled_object_schema)
    kinds = by_kind(docs)
    handler = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert handler["name"] == "asya-runtime"  # runtime: python came from gpu-inference
    assert handler["resources"]["limits"]["nvidia.com/gpu"] == "1"
    manifest = yaml.safe_load(kinds["ConfigMap"][0]["data"]["actor.yaml"])
    assert manifest["spec"]["resiliency"]["actorTimeout"] == "120s"
    assert manifest["spec"]["resiliency"]["policies"]["default"]["maxAttempts"] == 5
    assert kinds["ScaledObject"][0]["spec"]["minReplicaCount"] == 0


def test_a_flavor_conflict_names_both_flavors_and_the_field(tmp_path: Path):
    flavors = write(
        tmp_path,
        "f.yaml",
        [
            {
                "apiVersion": "asya.sh/v1alpha1",
                "kind": "Flavor",
                "metadata": {"name": "a"},
                "spec": {"scaling": {"maxReplicaCount": 3}},
            },
            {
                "apiVersion": "asya.sh/v1alpha1",
                "kind": "Flavor",
                "metadata": {"name": "b"},
                "spec": {"scaling": {"maxReplicas": 9}},
            },
        ],
    )
    file = write(
        tmp_path, "a.yaml", [actor("x", component="oci://r/x:1", flavors=["a", "b"])]
    )
    result = run_operator(
        "render", "-f", str(file), "--flavor", str(flavors), check=False
    )
    assert result.returncode != 0
    assert "flavors 'a' and 'b' both set spec.scaling.maxReplicaCount" in result.stderr


def test_scaling_off_gives_fixed_replicas_and_no_scaled_object(tmp_path: Path):
    file = write(
        tmp_path,
        "a.yaml",
        [
            actor(
                "fixed",
                component="oci://r/x:1",
                scaling={"enabled": False, "minReplicas": 3},
            )
        ],
    )
    kinds = by_kind(render(file))
    assert "ScaledObject" not in kinds
    assert kinds["Deployment"][0]["spec"]["replicas"] == 3


def test_an_actor_without_component_is_refused():
    result = run_operator(
        "render", "-f", str(ROOT / "tests/fixtures/actors/echo.yaml"), check=False
    )
    assert result.returncode != 0
    assert "needs spec.component" in result.stderr
