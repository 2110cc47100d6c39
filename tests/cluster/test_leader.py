"""Leader election between two real operator processes on the chart's Lease: only the holder
reconciles; after it is SIGKILLed, the other takes the Lease within the lease time (plus the
rounds leader.rs documents) and reconciles a new actor."""

from __future__ import annotations

import time

from cluster import Cluster, wait_for, wait_for_actor
from conftest import LEASE_SECONDS, Operators

NAMESPACE = "leader"


def actor(name: str) -> dict:
    return {
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "AsyncActor",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "handler": f"{name}.handle",
            "runtime": "python",
            "image": f"registry.local/{name}:v1",
        },
    }


def test_the_other_operator_takes_over_when_the_leader_dies(
    cluster: Cluster, operators: Operators
):
    leader = operators.leader()
    candidate = operators.start()
    wait_for(
        candidate.metrics, 30, "the candidate's /metrics", on_timeout=operators.dump
    )
    cluster.create_namespace(NAMESPACE)
    cluster.apply([actor("before")])
    wait_for_actor(cluster, NAMESPACE, "before", on_timeout=operators.dump)
    # A few lease rounds: the candidate never leads, never reconciles.
    deadline = time.monotonic() + LEASE_SECONDS
    while time.monotonic() < deadline:
        assert operators.lease_holder() == leader.holder
        assert not candidate.leading()
        time.sleep(0.5)
    assert leader.reconciliations() > 0
    assert candidate.reconciliations() == 0

    leader.process.kill()
    killed = time.monotonic()
    wait_for(
        lambda: operators.lease_holder() == candidate.holder,
        LEASE_SECONDS + LEASE_SECONDS + 5,
        "the candidate to take the Lease",
        on_timeout=operators.dump,
    )
    took = time.monotonic() - killed
    wait_for(candidate.leading, 2 * LEASE_SECONDS, "the candidate to lead")
    led = time.monotonic() - killed
    print(f"lease taken {took:.1f} s after the leader died, leading after {led:.1f} s")
    cluster.apply([actor("after")])
    wait_for_actor(cluster, NAMESPACE, "after", on_timeout=operators.dump)
    assert candidate.reconciliations() > 0
    assert candidate.alive()
