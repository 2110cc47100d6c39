"""The chart, installed with the real helm into a real API server: its CRDs are established
and served (`kubectl get asya`), its Flavors, ServiceAccount and RBAC exist."""

from __future__ import annotations

from functools import partial

from cluster import Cluster, conditions, wait_for


def established(cluster: Cluster, name: str) -> bool:
    crd = cluster.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    conds = conditions(crd or {})
    return all(
        conds.get(t, {}).get("status") == "True"
        for t in ("Established", "NamesAccepted")
    )


def test_the_chart_installs_and_its_crds_are_served(
    cluster: Cluster, chart: dict[str, str]
):
    for name in (
        "asyncactors.asya.sh",
        "flavors.asya.sh",
        "scaledobjects.keda.sh",
        "triggerauthentications.keda.sh",
    ):
        wait_for(partial(established, cluster, name), 30, f"CRD {name} established")
    status = cluster.helm(
        "status", chart["release"], "-n", chart["namespace"], "-o", "json"
    )
    assert '"status":"deployed"' in status.stdout.replace(" ", "")

    # No actors yet; the short name answers too.
    for resource in ("asyncactors", "asya"):
        result = cluster.kubectl("get", resource, "-A")
        assert "asyncactor" not in result.stdout, result.stdout
    flavors = cluster.kubectl_json("get", "flavors")["items"]
    assert {f["metadata"]["name"] for f in flavors} >= {
        "cpu-fast",
        "gpu-inference",
        "llm-resilient",
    }
    namespace = chart["namespace"]
    account = chart["service_account"]
    assert cluster.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}")
    role = cluster.get(
        f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{chart['release']}"
    )
    assert role and any("asyncactors" in r.get("resources", []) for r in role["rules"])


def test_the_service_account_may_do_what_the_operator_does(
    cluster: Cluster, chart: dict[str, str]
):
    """`kubectl auth can-i` as the chart's ServiceAccount, for every call the operator makes."""
    account = f"system:serviceaccount:{chart['namespace']}:{chart['service_account']}"
    allowed = [
        ("list", "asyncactors.asya.sh", None),
        ("watch", "asyncactors.asya.sh", None),
        ("patch", "asyncactors.asya.sh", "team-a"),
        ("patch", "asyncactors.asya.sh/status", "team-a"),
        ("update", "asyncactors.asya.sh/finalizers", "team-a"),
        ("list", "flavors.asya.sh", None),
        ("watch", "deployments.apps", None),
        ("create", "deployments.apps", "team-a"),
        ("patch", "deployments.apps", "team-a"),
        ("create", "configmaps", "team-a"),
        ("patch", "configmaps", "team-a"),
        ("create", "scaledobjects.keda.sh", "team-a"),
        ("delete", "triggerauthentications.keda.sh", "team-a"),
        ("create", "events.events.k8s.io", "team-a"),
        ("get", "leases.coordination.k8s.io", chart["namespace"]),
        ("create", "leases.coordination.k8s.io", chart["namespace"]),
        ("patch", "leases.coordination.k8s.io", chart["namespace"]),
    ]
    denied = [
        ("get", "secrets", "team-a"),
        ("patch", "leases.coordination.k8s.io", "kube-system"),
    ]
    for check in allowed + denied:
        verb, resource, namespace = check
        name, _, subresource = resource.partition("/")
        args = ["auth", "can-i", verb, name, "--as", account]
        args += [f"--subresource={subresource}"] if subresource else []
        args += ["-n", namespace] if namespace else ["-A"]
        answer = cluster.kubectl(*args, check=False).stdout.strip()
        expected = "yes" if check in allowed else "no"
        assert answer == expected, f"can {account} {verb} {resource} in {namespace}?"
