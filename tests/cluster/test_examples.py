"""The examples' AsyncActors (`examples/*/actors/*.yaml`) and the tutorial's (re-indented in
`tests/fixtures/asya-manifests/`, namespace `tutorial`), applied to a real cluster with a real
operator running as the chart's ServiceAccount: each gets the objects `asya-operator render`
prints (same key fields, owned by the actor), a status with every condition True, the CRD's
printer columns, and ReplicaSets and ready Pods from kube-controller-manager and kwok."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import (
    NODE,
    ROOT,
    Cluster,
    conditions,
    path_of,
    pod_ready,
    pods_of,
    printer_rows,
    render,
    subset_mismatches,
    wait_for_actor,
)
from conftest import Operators

EXAMPLES = sorted(ROOT.glob("examples/*/actors/*.yaml"))
TUTORIAL = sorted(
    (ROOT / "tests" / "fixtures" / "asya-manifests").glob("tutorial-*.yaml")
)
TUTORIAL_NAMESPACE = "tutorial"


def actors_in(
    files: list[Path], default_namespace: str | None
) -> list[tuple[str, str, Path]]:
    """(namespace, name, file) of every AsyncActor in the files."""
    out = []
    for file in files:
        for doc in yaml.safe_load_all(file.read_text()):
            if doc and doc.get("kind") == "AsyncActor":
                namespace = doc["metadata"].get("namespace") or default_namespace
                assert namespace, f"{file}: no namespace"
                out.append((str(namespace), str(doc["metadata"]["name"]), file))
    return out


ACTORS = actors_in(EXAMPLES, None) + actors_in(TUTORIAL, TUTORIAL_NAMESPACE)


@pytest.fixture(scope="module")
def applied(cluster: Cluster, operators: Operators) -> list[tuple[str, str, Path]]:
    """Every actor applied (their namespaces created first), with an operator leading."""
    operators.leader()
    for namespace in sorted({ns for ns, _, _ in ACTORS}):
        cluster.create_namespace(namespace)
    for file in EXAMPLES:
        cluster.apply(file)
    for file in TUTORIAL:
        cluster.apply(file, namespace=TUTORIAL_NAMESPACE)
    return ACTORS


def test_examples_and_tutorial_are_found():
    assert len(EXAMPLES) >= 10 and TUTORIAL, (EXAMPLES, TUTORIAL)
    assert {ns for ns, _, _ in ACTORS} >= {
        "text-pipeline",
        "review-flow",
        "gpu-embedder",
    }


def owned_objects(
    docs: list[dict[str, Any]], name: str, pool: str | None
) -> list[dict]:
    """The rendered objects serving an actor: its own (label asya.sh/actor), or its host
    pool's (label asya.sh/pool) when it is placed in one."""
    key, value = (
        ("asya.sh/pool", pool.split("/")[-1]) if pool else ("asya.sh/actor", name)
    )
    return [d for d in docs if (d["metadata"].get("labels") or {}).get(key) == value]


def owner_uid(cluster: Cluster, owner: dict[str, Any], namespace: str) -> str:
    kind = owner["kind"]
    plural = {"AsyncActor": "asyncactors", "AsyncActorPool": "asyncactorpools"}[kind]
    live = cluster.get(
        f"/apis/asya.sh/v1alpha1/namespaces/{namespace}/{plural}/{owner['name']}"
    )
    assert live, f"the owner {kind} {namespace}/{owner['name']} does not exist"
    return str(live["metadata"]["uid"])


@pytest.mark.parametrize(
    "namespace,name,file", ACTORS, ids=[f"{ns}/{name}" for ns, name, _ in ACTORS]
)
def test_actor_is_reconciled_as_rendered(
    cluster: Cluster,
    operators: Operators,
    operator_settings: list[str],
    applied: list[tuple[str, str, Path]],
    namespace: str,
    name: str,
    file: Path,
):
    actor = wait_for_actor(cluster, namespace, name, on_timeout=operators.dump)
    status = actor["status"]
    pool = status.get("pool")

    # The objects: what the offline render of the namespace's files says (a pool's objects
    # depend on all its members), as a subset of what the API server holds.
    files = sorted({f for ns, _, f in applied if ns == namespace})
    rendered = render(
        files, operator_settings, namespace=TUTORIAL_NAMESPACE, owner_uid="rendered"
    )
    expected = owned_objects(rendered, name, pool)
    kinds = {doc["kind"] for doc in expected}
    assert {"ConfigMap", "Deployment"} <= kinds, (pool, kinds)
    # A pool's objects are owned by its AsyncActorPool; a namespace's implicit default pool
    # (no such object) owns them itself (the operator deletes them when it empties).
    pool_object = None
    if pool:
        pool_ns, pool_name = pool.split("/")
        pool_object = cluster.get(
            f"/apis/asya.sh/v1alpha1/namespaces/{pool_ns}/asyncactorpools/{pool_name}"
        )
    for doc in expected:
        live = cluster.get(path_of(doc["kind"], namespace, doc["metadata"]["name"]))
        assert live, f"{doc['kind']} {doc['metadata']['name']} does not exist"
        owners = live["metadata"].get("ownerReferences") or []
        if pool and pool_object is None:
            assert owners == [], owners
        else:
            assert [(o["kind"], o["name"], o.get("controller")) for o in owners] == [
                (o["kind"], o["name"], True) for o in doc["metadata"]["ownerReferences"]
            ]
            assert owners[0]["uid"] == owner_uid(cluster, owners[0], namespace)
        for part in ("spec", "data"):
            if part in doc:
                problems = subset_mismatches(
                    doc[part], live.get(part), f"{doc['kind']}.{part}"
                )
                assert not problems, "\n".join(problems)
        problems = subset_mismatches(
            doc["metadata"]["labels"], live["metadata"]["labels"]
        )
        assert not problems, problems

    # Status: every condition True, the counts and the effective runtime and transport.
    conds = conditions(actor)
    assert set(conds) >= {"SpecValid", "QueueReady", "WorkloadReady", "ScalingReady"}
    assert all(c["status"] == "True" for c in conds.values()), conds
    assert conds["SpecValid"]["reason"] == "Merged"
    transport = actor["spec"].get("transport", "nats")
    assert status["transport"] == transport
    assert conds["QueueReady"]["reason"] == (
        "ConsumerReady" if transport == "nats" else "DeclaredByHost"
    )
    if not pool:
        assert conds["ScalingReady"]["reason"] == (
            "ScaledObjectApplied" if "ScaledObject" in kinds else "ScalingDisabled"
        )
    (deployment_doc,) = [d for d in expected if d["kind"] == "Deployment"]
    deployment_name = deployment_doc["metadata"]["name"]
    deployment = cluster.get(path_of("Deployment", namespace, deployment_name))
    runtime = "python" if deployment_is_python(deployment) else "wasm"
    assert status["runtime"] == runtime
    assert status["replicas"] == deployment["spec"]["replicas"]
    assert status["readyReplicas"] == status["replicas"]
    assert status["phase"] == ("ScaledToZero" if status["replicas"] == 0 else "Ready")

    # kube-controller-manager made a ReplicaSet and pods; kwok runs them on the fake node.
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )
    sets = cluster.get(
        f"/apis/apps/v1/namespaces/{namespace}/replicasets?labelSelector={selector}"
    )
    assert [
        (o["kind"], o["name"])
        for rs in sets["items"]
        for o in rs["metadata"]["ownerReferences"]
    ] == [("Deployment", deployment_name)]
    pods = pods_of(cluster, namespace, selector)
    assert len(pods) == status["replicas"]
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE
        assert pod_ready(pod), pod["status"]
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"


def deployment_is_python(deployment: dict[str, Any]) -> bool:
    names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    return "asya-runtime" in names


def test_printer_columns(
    cluster: Cluster, operators: Operators, applied: list[tuple[str, str, Path]]
):
    """`kubectl get asyncactors -n NS` shows each actor's phase, runtime, replicas and
    transport (`kubectl get asya` expands the `asya` category: actors and flavors)."""
    for namespace in sorted({ns for ns, _, _ in applied}):
        names = sorted(name for ns, name, _ in applied if ns == namespace)
        for name in names:
            wait_for_actor(cluster, namespace, name, on_timeout=operators.dump)
        text = cluster.kubectl("get", "asyncactors", "-n", namespace).stdout
        header = text.splitlines()[0].split()
        assert header == [
            "NAME",
            "PHASE",
            "RUNTIME",
            "READY",
            "DESIRED",
            "TRANSPORT",
            "AGE",
        ]
        rows = {row["NAME"]: row for row in printer_rows(text)}
        assert sorted(rows) == names
        for name in names:
            status = cluster.get(path_of("AsyncActor", namespace, name))["status"]
            row = rows[name]
            assert row["PHASE"] == status["phase"]
            assert row["RUNTIME"] == status["runtime"]
            assert row["READY"] == str(status["readyReplicas"])
            assert row["DESIRED"] == str(status["replicas"])
            assert row["TRANSPORT"] == status["transport"]
            assert row["AGE"][-1] in "smhd", row


def test_nats_actors_have_their_consumers(
    cluster: Cluster, nats: Any, applied: list[tuple[str, str, Path]]
):
    """The operator created each namespace's stream and each nats actor's consumer."""
    for namespace, name, _ in applied:
        actor = wait_for_actor(cluster, namespace, name)
        if actor["status"]["transport"] != "nats":
            continue
        stream = "ASYA_" + namespace.upper().replace("-", "_")
        assert name in nats.consumers(stream), (stream, nats.streams())


def test_the_tutorials_kubectl_get_asya_name(
    cluster: Cluster, operators: Operators, applied: list[tuple[str, str, Path]]
):
    """The tutorial says `kubectl get asya text-processor`: `asya` must name AsyncActors
    (a CRD category of the same name would win, and kubectl refuses a name after a category
    of several kinds: "you must specify only one resource")."""
    wait_for_actor(
        cluster, TUTORIAL_NAMESPACE, "text-processor", on_timeout=operators.dump
    )
    result = cluster.kubectl(
        "get", "asya", "text-processor", "-n", TUTORIAL_NAMESPACE, check=False
    )
    assert result.returncode == 0, result.stderr
    (row,) = printer_rows(result.stdout)
    assert row["NAME"] == "text-processor"
    assert row["PHASE"] == "Ready"
