"""The Helm chart, linted and rendered with Helm's own Go code as a library (helm-python-sdk;
there is no helm binary here); every rendered object validated."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from k8s_checks import CHART, KUBE_VERSION, documents, run_operator, validate_kubernetes


@pytest.fixture(scope="module")
def rendered():
    chart = helm.Chart.load(str(CHART))
    out = chart.render(
        {"nats": {"url": "nats://nats.messaging:4222"}},
        name="asya",
        namespace="asya-system",
        is_install=True,
    )
    docs = []
    for path, text in out.items():
        if path.endswith(".yaml"):
            docs += documents(text)
    return docs


def test_lint_is_clean():
    report = helm.lint(str(CHART), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_rendered_objects_are_valid(rendered, flavor_schema):
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Flavor",
            "Flavor",
            "Flavor",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    )
    for doc in rendered:
        if doc["kind"] == "Flavor":
            flavor_schema.validate(doc)
        else:
            validate_kubernetes(doc)


def test_default_flavors(rendered):
    names = {d["metadata"]["name"] for d in rendered if d["kind"] == "Flavor"}
    assert names == {"cpu-fast", "gpu-inference", "llm-resilient"}


def test_operator_deployment_gets_the_values(rendered):
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "run"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ASYA_NATS_URL"] == "nats://nats.messaging:4222"
    assert env["ASYA_HOST_IMAGE"] == "ghcr.io/asya-sh/asya-host:0.1.0"
    # The transports' settings, with their defaults.
    assert env["ASYA_RABBITMQ_SECRET"] == "asya-rabbitmq"
    assert env["ASYA_RABBITMQ_STORE"] == "dynamodb"
    assert env["ASYA_AWS_REGION"] == "us-east-1"
    assert env["ASYA_DYNAMODB_TABLE"] == "asya-state"
    assert "ASYA_AWS_ENDPOINT" not in env
    assert "ASYA_AWS_CREDENTIALS_SECRET" not in env
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["replicas"] == 2


def test_rbac_is_least_privilege(rendered):
    (cluster_role,) = [d for d in rendered if d["kind"] == "ClusterRole"]
    granted = {}
    for rule in cluster_role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted[(group, resource)] = set(rule["verbs"])
    assert granted == {
        ("asya.sh", "asyncactors"): {"get", "list", "watch", "patch"},
        ("asya.sh", "asyncactors/status"): {"get", "patch"},
        ("asya.sh", "asyncactors/finalizers"): {"update"},
        ("asya.sh", "asyncactorpools/finalizers"): {"update"},
        ("asya.sh", "flavors"): {"get", "list", "watch"},
        ("asya.sh", "asyncactorpools"): {"get", "list", "watch"},
        ("asya.sh", "asyncactorpools/status"): {"get", "patch"},
        # delete: an empty pool's objects, and a pooled actor's from a dedicated past.
        ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "configmaps"): {"get", "create", "patch", "delete"},
        ("keda.sh", "scaledobjects"): {"get", "create", "patch", "delete"},
        ("keda.sh", "triggerauthentications"): {"get", "create", "patch", "delete"},
        ("events.k8s.io", "events"): {"create", "patch"},
    }
    # Secrets are never granted; leases only in the release's namespace.
    (role,) = [d for d in rendered if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "asya-system"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "patch"],
        }
    ]


def test_chart_crds_are_the_generated_ones():
    chart = helm.Chart.load(str(CHART))
    shipped = [doc for crd in chart.crds for doc in documents(crd["data"])]
    generated = documents(run_operator("crd").stdout)
    assert shipped == generated
    text = (CHART / "crds" / "asya.sh_crds.yaml").read_text()
    assert text == run_operator("crd").stdout, (
        "regenerate: asya-operator crd > charts/asya/crds/asya.sh_crds.yaml"
    )


def test_leader_election_off_means_one_replica():
    chart = helm.Chart.load(str(CHART))
    out = chart.render(
        {"leaderElection": {"enabled": False}}, name="asya", namespace="ops"
    )
    docs = documents(out["asya/templates/deployment.yaml"])
    assert docs[0]["spec"]["replicas"] == 1
    assert (
        "--no-leader-election"
        in docs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert "Role" not in {d["kind"] for d in documents(out["asya/templates/rbac.yaml"])}
    assert (
        yaml.safe_load(out["asya/templates/serviceaccount.yaml"])["metadata"][
            "namespace"
        ]
        == "ops"
    )


def test_results_ttl_reaches_the_operator_per_namespace():
    chart = helm.Chart.load(str(CHART))
    out = chart.render(
        {
            "results": {
                "ttl": "12h",
                "ttlByNamespace": {"team-b": "30m", "team-a": "1h"},
            }
        },
        name="asya",
        namespace="ops",
    )
    (deployment,) = documents(out["asya/templates/deployment.yaml"])
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["ASYA_RESULTS_TTL"] == "12h"
    assert env["ASYA_RESULTS_TTL_FOR"] == "team-a=1h,team-b=30m"
    # The operator reads the same setting, and refuses one it cannot parse.
    example = str(CHART.parents[1] / "examples/text-pipeline/actors/classify.yaml")
    ok = run_operator(
        "render", "-f", example, "--results-ttl-for", "team-a=1h,team-b=30m"
    )
    assert ok.returncode == 0
    bad = run_operator(
        "render", "-f", example, "--results-ttl-for", "team-a=soon", check=False
    )
    assert bad.returncode != 0
    assert "--results-ttl-for soon" in bad.stderr, bad.stderr


def test_transport_settings_reach_the_operator():
    chart = helm.Chart.load(str(CHART))
    out = chart.render(
        {
            "rabbitmq": {"secret": "broker", "store": "nats://nats.nats.svc:4222"},
            "aws": {
                "region": "eu-west-1",
                "endpoint": "http://localstack.aws.svc:4566",
                "credentialsSecret": "aws-keys",
                "dynamodbTable": "asya-results",
            },
        },
        name="asya",
        namespace="ops",
    )
    (deployment,) = documents(out["asya/templates/deployment.yaml"])
    validate_kubernetes(deployment)
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    settings = {
        "ASYA_RABBITMQ_SECRET": ("--rabbitmq-secret", "broker"),
        "ASYA_RABBITMQ_STORE": ("--rabbitmq-store", "nats://nats.nats.svc:4222"),
        "ASYA_AWS_REGION": ("--aws-region", "eu-west-1"),
        "ASYA_AWS_ENDPOINT": ("--aws-endpoint", "http://localstack.aws.svc:4566"),
        "ASYA_AWS_CREDENTIALS_SECRET": ("--aws-credentials-secret", "aws-keys"),
        "ASYA_DYNAMODB_TABLE": ("--dynamodb-table", "asya-results"),
    }
    for name, (_, value) in settings.items():
        assert env[name] == value, name
    # The operator reads each of these variables as the flag's value.
    help_text = run_operator("render", "--help").stdout
    for name, (flag, _) in settings.items():
        assert flag in help_text and name in help_text, name


def test_the_gateway_renders_with_its_config_and_no_secret(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"a key nobody commits").hexdigest()
    config = {
        "tenants": [
            {"namespace": "team-a", "apiKeys": [{"name": "ci", "sha256": digest}]}
        ],
        "tools": [
            {"name": "summarize", "namespace": "team-a", "route": ["clean", "x-pause"]}
        ],
    }
    chart = helm.Chart.load(str(CHART))
    out = chart.render(
        {"gateway": {"enabled": True, "config": config}},
        name="asya",
        namespace="asya-system",
        is_install=True,
    )
    docs = [
        d
        for path, text in out.items()
        if path.endswith(".yaml")
        for d in documents(text)
    ]
    gateway = [d for d in docs if d["metadata"]["name"] == "asya-gateway"]
    assert sorted(d["kind"] for d in gateway) == ["ConfigMap", "Deployment", "Service"]
    (config_map,) = [d for d in gateway if d["kind"] == "ConfigMap"]
    text = config_map["data"]["gateway.yaml"]
    assert "a key nobody commits" not in text
    # The gateway binary itself accepts the rendered file.
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    binary = Path(__file__).resolve().parents[2] / "target" / "release" / "asya-gateway"
    checked = subprocess.run(
        [str(binary), "check", "--config", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    assert "1 tenants, 1 tools" in checked.stdout
    (deployment,) = [d for d in gateway if d["kind"] == "Deployment"]
    (service,) = [d for d in gateway if d["kind"] == "Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # The operator's metrics Service does not select the gateway's pods.
    (metrics,) = [
        d
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["name"] == "asya-metrics"
    ]
    assert not metrics["spec"]["selector"].items() <= labels.items()
