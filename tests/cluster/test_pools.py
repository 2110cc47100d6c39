"""Host pools on a real control plane, with the operator running as the chart's ServiceAccount:
a namespace's default pool growing from 1 to 300 actors behind one Deployment, one ConfigMap
and one KEDA trigger; a named AsyncActorPool admitting only the namespaces it selects, and
refusing with a condition when full; an invalid actor kept out while its pool serves the
rest."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any

import nats as nats_client
from cluster import (
    Cluster,
    Nats,
    conditions,
    path_of,
    printer_rows,
    wait_for,
    wait_for_actor,
)
from conftest import Operators

GROWTH = "pool-growth"
SHARED, TENANT_A, TENANT_Z = "pool-shared", "pool-tenant-a", "pool-tenant-z"


def actor(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "AsyncActor",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "handler": "handler.process",
            "component": f"oci://registry.local/{namespace}/{name}:v1",
            **spec,
        },
    }


def pool_members(cluster: Cluster, namespace: str, pool: str = "default") -> list[str]:
    config_map = cluster.get(
        f"/api/v1/namespaces/{namespace}/configmaps/asya-pool-{pool}"
    )
    return sorted((config_map or {}).get("data") or {})


def placed(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    actor = cluster.get(path_of("AsyncActor", namespace, name)) or {}
    return conditions(actor).get("Placed")


def placed_as(cluster: Cluster, namespace: str, name: str, reason: str) -> dict:
    return wait_for(
        lambda: (c := placed(cluster, namespace, name)) and c["reason"] == reason and c,
        60,
        f"{namespace}/{name} placed with reason {reason}",
    )


def test_a_pool_grows_from_1_to_300_actors(cluster: Cluster, operators: Operators):
    operators.leader()
    cluster.create_namespace(GROWTH)
    cluster.apply([actor("a-000", GROWTH)])
    wait_for(lambda: pool_members(cluster, GROWTH), 60, "the pool's first member")
    first = wait_for_actor(cluster, GROWTH, "a-000", timeout=90)
    assert first["status"]["pool"] == f"{GROWTH}/default"

    started = time.monotonic()
    cluster.apply([actor(f"a-{i:03}", GROWTH) for i in range(1, 300)])
    wait_for(
        lambda: len(pool_members(cluster, GROWTH)) == 300,
        300,
        "300 actors in the pool's ConfigMap",
        interval=1,
    )
    grown_in = time.monotonic() - started
    print(f"pool grew from 1 to 300 actors in {grown_in:.1f} s")

    # One Deployment, one ScaledObject with one trigger: none per actor.
    deployments = cluster.get(f"/apis/apps/v1/namespaces/{GROWTH}/deployments")
    names = [d["metadata"]["name"] for d in deployments["items"]]
    assert names == ["asya-pool-default"], names
    (hosts,) = deployments["items"]
    (container,) = hosts["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--pool") + 1] == (
        f"{GROWTH}/default"
    )
    scaled = cluster.get(
        f"/apis/keda.sh/v1alpha1/namespaces/{GROWTH}/scaledobjects/asya-pool-default"
    )
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    assert scaled["spec"]["minReplicaCount"] == 1

    # Every actor says where it runs.
    def all_pooled() -> bool:
        actors = cluster.get(f"/apis/asya.sh/v1alpha1/namespaces/{GROWTH}/asyncactors")
        return len(actors["items"]) == 300 and all(
            conditions(a).get("Placed", {}).get("reason") == "Pooled"
            for a in actors["items"]
        )

    wait_for(all_pooled, 180, "every actor Placed=Pooled", interval=1)
    last = placed(cluster, GROWTH, "a-299")
    assert last and "served by host pool" in last["message"], last


def test_a_nats_pool_scales_on_its_members_total_backlog(
    cluster: Cluster, operators: Operators, nats: Nats
):
    """KEDA's one trigger of the 300-actor pool reads the operator's backlog endpoint: the sum
    of the members' consumers' pending messages (no host consumes here: kwok runs no pods)."""
    leader = operators.leader()

    async def publish() -> None:
        client = await nats_client.connect(nats.url)
        stream = client.jetstream()
        for actor, count in (("a-001", 7), ("a-002", 5)):
            for i in range(count):
                await stream.publish(
                    f"asya.{GROWTH}.{actor}", json.dumps({"i": i}).encode()
                )
        await client.close()

    asyncio.run(publish())
    url = f"http://{leader.http}/v1/pools/{GROWTH}/default/backlog"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body == {"backlog": 12, "actors": 300}


def test_a_named_pool_admits_only_the_namespaces_it_selects(
    cluster: Cluster, operators: Operators
):
    operators.leader()
    for namespace in (SHARED, TENANT_A, TENANT_Z):
        cluster.create_namespace(namespace)
    cluster.apply(
        [
            {
                "apiVersion": "asya.sh/v1alpha1",
                "kind": "AsyncActorPool",
                "metadata": {"name": "free", "namespace": SHARED},
                "spec": {"namespaces": [TENANT_A], "maxActors": 2},
            }
        ]
    )
    named = f"{SHARED}/free"
    cluster.apply([actor("first", TENANT_A, pool=named)])
    placed_as(cluster, TENANT_A, "first", "Pooled")
    assert pool_members(cluster, SHARED, "free") == [f"{TENANT_A}.first.yaml"]

    # Another tenant's actor is refused, and says why.
    cluster.apply([actor("outsider", TENANT_Z, pool=named)])
    refused = placed_as(cluster, TENANT_Z, "outsider", "NotAdmitted")
    assert refused["status"] == "False"
    assert f"does not admit namespace {TENANT_Z}" in refused["message"]

    # A full pool refuses the latest actor; the earlier ones keep their place.
    cluster.apply([actor("second", TENANT_A, pool=named)])
    placed_as(cluster, TENANT_A, "second", "Pooled")
    cluster.apply([actor("third", TENANT_A, pool=named)])
    full = placed_as(cluster, TENANT_A, "third", "PoolFull")
    assert "maxActors 2 reached" in full["message"]
    assert pool_members(cluster, SHARED, "free") == [
        f"{TENANT_A}.first.yaml",
        f"{TENANT_A}.second.yaml",
    ]
    # The pool's printer columns and status count them.
    rows = printer_rows(cluster.kubectl("get", "asyncactorpools", "-n", SHARED).stdout)
    assert rows[0]["NAME"] == "free" and rows[0]["MAX"] == "2"
    wait_for(
        lambda: (
            (
                cluster.get(
                    f"/apis/asya.sh/v1alpha1/namespaces/{SHARED}/asyncactorpools/free"
                )
                or {}
            )
            .get("status", {})
            .get("actors")
            == 2
        ),
        30,
        "the pool's status to count its actors",
    )
    # An unknown pool is a condition too.
    cluster.apply([actor("lost", TENANT_A, pool="nowhere")])
    missing = placed_as(cluster, TENANT_A, "lost", "PoolNotFound")
    assert f"{TENANT_A}/nowhere does not exist" in missing["message"]


def test_an_invalid_actor_stays_out_of_its_pool(cluster: Cluster, operators: Operators):
    operators.leader()
    namespace = "pool-broken"
    cluster.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    )
    cluster.apply([actor(f"ok-{i}", namespace) for i in range(5)])
    wait_for(
        lambda: len(pool_members(cluster, namespace)) == 5, 60, "five pooled actors"
    )
    # Valid for the CRD, refused by the operator (a flavor that does not exist): it fails
    # with a reason and never reaches the pool; the other five stay in it.
    cluster.apply([actor("bad", namespace, flavors=["no-such-flavor"])])

    def failed() -> dict | None:
        obj = cluster.get(path_of("AsyncActor", namespace, "bad")) or {}
        return obj if (obj.get("status") or {}).get("phase") == "Failed" else None

    bad = wait_for(failed, 60, "the invalid actor to fail")
    assert "no-such-flavor" in conditions(bad)["SpecValid"]["message"]
    assert pool_members(cluster, namespace) == [
        f"{namespace}.ok-{i}.yaml" for i in range(5)
    ]
