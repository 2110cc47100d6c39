"""Deleting an actor on a real cluster: the operator's finalizer deletes its JetStream
consumer, then the actor goes, and kube-controller-manager's garbage collector deletes what it
owned (Deployment, ConfigMap, ScaledObject, then the ReplicaSet and pods)."""

from __future__ import annotations

import time

from cluster import (
    Cluster,
    Nats,
    Operator,
    path_of,
    pods_of,
    wait_for,
    wait_for_actor,
    wait_gone,
)

NAMESPACE = "deletion"
STREAM = "ASYA_DELETION"


def actor_consumers(nats: Nats) -> list[str]:
    """The stream's consumers but the end actors' (x-sink, x-sump, x-fanin: the namespace's)."""
    return sorted(c for c in nats.consumers(STREAM) if not c.startswith("x-"))


def test_deleting_an_actor_removes_its_consumer_and_objects(
    cluster: Cluster, operator: Operator, nats: Nats
):
    cluster.create_namespace(NAMESPACE)
    cluster.apply(
        [
            {
                "apiVersion": "asya.sh/v1alpha1",
                "kind": "AsyncActor",
                "metadata": {"name": "doomed", "namespace": NAMESPACE},
                "spec": {
                    "handler": "doomed.handle",
                    "runtime": "python",
                    "image": "registry.local/doomed:v1",
                    "scaling": {
                        "enabled": True,
                        "minReplicaCount": 1,
                        "maxReplicaCount": 2,
                    },
                },
            },
            {
                "apiVersion": "asya.sh/v1alpha1",
                "kind": "AsyncActor",
                "metadata": {"name": "kept", "namespace": NAMESPACE},
                "spec": {
                    "handler": "kept.handle",
                    "runtime": "python",
                    "image": "registry.local/kept:v1",
                },
            },
        ]
    )
    actor = wait_for_actor(cluster, NAMESPACE, "doomed", on_timeout=operator.log)
    wait_for_actor(cluster, NAMESPACE, "kept", on_timeout=operator.log)
    assert actor["metadata"]["finalizers"] == ["asya.sh/jetstream-consumer"]
    assert actor_consumers(nats) == ["doomed", "kept"]
    owned = [
        path_of("Deployment", NAMESPACE, "doomed"),
        path_of("ConfigMap", NAMESPACE, "doomed-asya"),
        path_of("ScaledObject", NAMESPACE, "doomed"),
    ]
    for path in owned:
        assert cluster.get(path), path
    wait_for(
        lambda: pods_of(cluster, NAMESPACE, "asya.sh/actor=doomed"),
        30,
        "the actor's pods",
    )

    cluster.kubectl("delete", "asyncactor", "doomed", "-n", NAMESPACE, "--wait=false")
    deleted = time.monotonic()
    wait_gone(cluster, path_of("AsyncActor", NAMESPACE, "doomed"), timeout=30)
    actor_gone = time.monotonic() - deleted
    assert actor_consumers(nats) == ["kept"]
    for path in owned:
        wait_gone(cluster, path, timeout=90)
    owned_gone = time.monotonic() - deleted
    wait_for(
        lambda: not pods_of(cluster, NAMESPACE, "asya.sh/actor=doomed"),
        60,
        "the actor's pods to be deleted",
    )
    print(
        f"deleted: the actor after {actor_gone:.1f} s, its objects after {owned_gone:.1f} s,"
        f" its pods after {time.monotonic() - deleted:.1f} s"
    )
    sets = cluster.get(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets?labelSelector=asya.sh/actor%3Ddoomed"
    )
    assert sets["items"] == []
    # The other actor of the namespace is untouched.
    assert cluster.get(path_of("Deployment", NAMESPACE, "kept"))
