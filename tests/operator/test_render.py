"""`asya-operator render` on the example manifests and on RabbitMQ and SQS actors: every object
it would apply is validated against the real Kubernetes schemas (kubernetes-validate) or KEDA's
ScaledObject and TriggerAuthentication schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from k8s_checks import ROOT, documents, render, run_operator, validate_kubernetes

TEXT_PIPELINE = sorted((ROOT / "examples" / "text-pipeline" / "actors").glob("*.yaml"))
GPU = sorted((ROOT / "examples" / "gpu-embedder" / "actors").glob("*.yaml"))
UID = "5e0b2f4c-3a6d-4b8e-9c1f-0d2e3f4a5b6c"


def by_kind(docs):
    out: dict[str, list[dict]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


# What each KEDA scaler needs in its trigger's metadata (the operator's triggers).
TRIGGER_METADATA = {
    # nats: to find the consumer's lag.
    "nats-jetstream": ("natsServerMonitoringEndpoint", "account", "stream", "consumer"),
    # rabbitmq: the queue and how to count it (the URL comes from the TriggerAuthentication).
    "rabbitmq": ("protocol", "queueName", "mode", "value"),
    "aws-sqs-queue": ("queueURL", "queueLength", "awsRegion"),
    # a NATS host pool: its members' total backlog, from the operator.
    "metrics-api": ("url", "valueLocation", "targetValue"),
}


def validate_all(docs, scaled_object_schema, trigger_authentication_schema=None):
    assert docs
    auths = {
        doc["metadata"]["name"]
        for doc in docs
        if doc["kind"] == "TriggerAuthentication"
    }
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            scaled_object_schema.validate(doc)
            (trigger,) = doc["spec"]["triggers"]
            for key in TRIGGER_METADATA[trigger["type"]]:
                assert trigger["metadata"][key], key
            if trigger["type"] == "nats-jetstream":
                assert int(trigger["metadata"]["lagThreshold"]) >= 1
                assert "authenticationRef" not in trigger
            elif trigger["type"] == "metrics-api":
                assert int(trigger["metadata"]["targetValue"]) >= 1
                assert "authenticationRef" not in trigger
            else:
                # The broker's credentials: by reference to the actor's TriggerAuthentication.
                assert trigger["authenticationRef"]["name"] in auths
        elif doc["kind"] == "TriggerAuthentication":
            assert trigger_authentication_schema is not None
            trigger_authentication_schema.validate(doc)
        else:
            validate_kubernetes(doc)


def test_a_rabbitmq_pool_scales_per_queue_with_its_trigger_authentication(
    tmp_path: Path, scaled_object_schema, trigger_authentication_schema
):
    file = write(
        tmp_path,
        "a.yaml",
        [
            actor(name, transport="rabbitmq", component=f"oci://r/{name}:1")
            for name in ("classify", "score")
        ],
    )
    docs = render(file, dedicated=False)
    kinds = by_kind(docs)
    assert kinds["Deployment"][0]["metadata"]["name"] == "asya-pool-default-rabbitmq"
    (scaled,) = kinds["ScaledObject"]
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["rabbitmq", "rabbitmq"]
    (auth,) = kinds["TriggerAuthentication"]
    assert auth["spec"]["secretTargetRef"][0]["parameter"] == "host"
    env = {
        e["name"]: e
        for e in kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["ASYA_TRANSPORT"]["value"] == "rabbitmq"
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            scaled_object_schema.validate(doc)
        elif doc["kind"] == "TriggerAuthentication":
            trigger_authentication_schema.validate(doc)
        else:
            validate_kubernetes(doc)


def test_the_example_pipeline_renders_as_one_host_pool(scaled_object_schema):
    """Without --dedicated the wasm actors share their namespace's pool: one ConfigMap with
    every member's manifest, one Deployment of `asya-host run --pool`, one ScaledObject with
    one trigger however many actors, all valid Kubernetes and KEDA objects."""
    docs = render(*TEXT_PIPELINE, dedicated=False)
    kinds = by_kind(docs)
    assert sorted(kinds) == ["ConfigMap", "Deployment", "ScaledObject"]
    (config_map,) = kinds["ConfigMap"]
    # Every actor of every file (a file may hold several).
    assert len(config_map["data"]) >= len(TEXT_PIPELINE)
    (hosts,) = kinds["Deployment"]
    assert hosts["metadata"]["name"] == "asya-pool-default"
    args = hosts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--pool" in args
    (scaled,) = kinds["ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    assert trigger["metadata"]["url"].endswith("/backlog")
    validate_all(docs, scaled_object_schema)


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


def host_of(docs) -> dict:
    (deployment,) = by_kind(docs)["Deployment"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (host,) = [c for c in containers if c["name"] == "asya-sidecar"]
    return host


def env_values(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def env_secrets(container: dict) -> dict[str, tuple[str, str]]:
    out = {}
    for e in container["env"]:
        if "valueFrom" in e:
            assert "value" not in e, e
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = (ref["name"], ref["key"])
    return out


def test_a_rabbitmq_actor(
    tmp_path: Path, scaled_object_schema, trigger_authentication_schema
):
    file = write(
        tmp_path,
        "a.yaml",
        [
            actor(
                "classify",
                transport="rabbitmq",
                component="oci://r/classify:1",
                scaling={"minReplicaCount": 0, "maxReplicaCount": 4, "queueLength": 8},
            )
        ],
    )
    result = run_operator("render", "-f", str(file), "--owner-uid", UID, "--dedicated")
    assert "rabbitmq queue asya-demo-classify (declared by the host)" in result.stdout
    docs = documents(result.stdout)
    validate_all(docs, scaled_object_schema, trigger_authentication_schema)
    kinds = [doc["kind"] for doc in docs]
    assert kinds == ["ConfigMap", "Deployment", "TriggerAuthentication", "ScaledObject"]
    host = host_of(docs)
    # The host declares its own queues.
    assert "--no-create" not in host["args"]
    env = env_values(host)
    assert env["ASYA_TRANSPORT"] == "rabbitmq"
    assert env["ASYA_STORE"] == "dynamodb"
    assert env["ASYA_DYNAMODB_TABLE"] == "asya-state"
    assert "ASYA_NATS_URL" not in env
    assert env_secrets(host) == {"ASYA_RABBITMQ_URL": ("asya-rabbitmq", "url")}
    kinds = by_kind(docs)
    (trigger,) = kinds["ScaledObject"][0]["spec"]["triggers"]
    assert trigger == {
        "type": "rabbitmq",
        "name": "queue",
        "metadata": {
            "protocol": "amqp",
            "queueName": "asya-demo-classify",
            "mode": "QueueLength",
            "value": "8",
        },
        "authenticationRef": {"name": "asya-classify-auth"},
    }
    (auth,) = kinds["TriggerAuthentication"]
    assert auth["metadata"]["name"] == "asya-classify-auth"
    assert auth["metadata"]["ownerReferences"][0]["uid"] == UID
    assert auth["spec"] == {
        "secretTargetRef": [
            {"parameter": "host", "name": "asya-rabbitmq", "key": "host"}
        ]
    }
    # The URL (it holds the password) is never in what the operator applies.
    assert "amqp://" not in result.stdout


def test_rabbitmq_settings(
    tmp_path: Path, scaled_object_schema, trigger_authentication_schema
):
    file = write(
        tmp_path,
        "a.yaml",
        [actor("classify", transport="rabbitmq", component="oci://r/c:1", scaling={})],
    )
    docs = render(
        file,
        settings=(
            "--rabbitmq-secret",
            "broker",
            "--rabbitmq-store",
            "nats://nats.nats.svc:4222",
        ),
    )
    validate_all(docs, scaled_object_schema, trigger_authentication_schema)
    host = host_of(docs)
    assert env_values(host)["ASYA_STORE"] == "nats://nats.nats.svc:4222"
    assert "AWS_REGION" not in env_values(host)
    assert env_secrets(host) == {"ASYA_RABBITMQ_URL": ("broker", "url")}
    (auth,) = by_kind(docs)["TriggerAuthentication"]
    assert auth["spec"]["secretTargetRef"][0]["name"] == "broker"
    for bad in ("redis://r:6379", "nats://user:pw@nats:4222"):
        result = run_operator(
            "render", "-f", str(file), "--rabbitmq-store", bad, check=False
        )
        assert result.returncode != 0
        assert "--rabbitmq-store" in result.stderr, result.stderr


def sqs_actor(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        "sqs.yaml",
        [
            actor(
                "embed",
                transport="sqs",
                runtime="python",
                image="registry.local/embed:v1",
                handler="embedder.embed",
                scaling={"minReplicas": 0, "maxReplicas": 3, "queueLength": 2},
            )
        ],
    )


def test_an_sqs_actor_on_pod_identity(
    tmp_path: Path, scaled_object_schema, trigger_authentication_schema
):
    docs = render(sqs_actor(tmp_path), uid=UID)
    validate_all(docs, scaled_object_schema, trigger_authentication_schema)
    host = host_of(docs)
    assert "--no-create" not in host["args"]
    env = env_values(host)
    assert env["ASYA_TRANSPORT"] == "sqs"
    assert env["ASYA_STORE"] == "dynamodb"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["ASYA_DYNAMODB_TABLE"] == "asya-state"
    assert "AWS_ENDPOINT_URL" not in env
    assert env_secrets(host) == {}
    kinds = by_kind(docs)
    (trigger,) = kinds["ScaledObject"][0]["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["metadata"] == {
        "queueURL": "asya-demo-embed",
        "queueLength": "2",
        "awsRegion": "us-east-1",
    }
    assert trigger["authenticationRef"] == {"name": "asya-embed-auth"}
    (auth,) = kinds["TriggerAuthentication"]
    assert auth["spec"] == {"podIdentity": {"provider": "aws"}}


def test_an_sqs_actor_on_a_local_endpoint_with_keys(
    tmp_path: Path, scaled_object_schema, trigger_authentication_schema
):
    docs = render(
        sqs_actor(tmp_path),
        settings=(
            "--aws-region",
            "eu-west-1",
            "--aws-endpoint",
            "http://localstack.aws.svc:4566",
            "--aws-credentials-secret",
            "aws-keys",
            "--dynamodb-table",
            "asya-results",
        ),
    )
    validate_all(docs, scaled_object_schema, trigger_authentication_schema)
    host = host_of(docs)
    env = env_values(host)
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["AWS_ENDPOINT_URL"] == "http://localstack.aws.svc:4566"
    assert env["ASYA_DYNAMODB_TABLE"] == "asya-results"
    assert env_secrets(host) == {
        "AWS_ACCESS_KEY_ID": ("aws-keys", "AWS_ACCESS_KEY_ID"),
        "AWS_SECRET_ACCESS_KEY": ("aws-keys", "AWS_SECRET_ACCESS_KEY"),
    }
    kinds = by_kind(docs)
    metadata = kinds["ScaledObject"][0]["spec"]["triggers"][0]["metadata"]
    assert metadata["awsEndpoint"] == "http://localstack.aws.svc:4566"
    assert metadata["awsRegion"] == "eu-west-1"
    (auth,) = kinds["TriggerAuthentication"]
    assert auth["spec"] == {
        "secretTargetRef": [
            {
                "parameter": "awsAccessKeyID",
                "name": "aws-keys",
                "key": "AWS_ACCESS_KEY_ID",
            },
            {
                "parameter": "awsSecretAccessKey",
                "name": "aws-keys",
                "key": "AWS_SECRET_ACCESS_KEY",
            },
        ]
    }


def test_nats_actors_name_their_transport(tmp_path: Path):
    docs = render(ROOT / "examples/text-pipeline/actors/classify.yaml")
    env = env_values(host_of(docs))
    assert env["ASYA_TRANSPORT"] == "nats"
    assert "TriggerAuthentication" not in by_kind(docs)
