"""A flavor conflict on a real cluster: two Flavors setting the same scalar to different values
make the actor Failed with a SpecValid False condition naming both flavors and the field;
fixing one of the Flavors (the operator watches Flavors) makes it Ready again."""

from __future__ import annotations

from cluster import Cluster, Operator, conditions, path_of, wait_for_actor

NAMESPACE = "flavor-conflict"


def flavor(name: str, sandbox: dict[str, str]) -> dict:
    return {
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {"sandbox": sandbox},
    }


def test_a_flavor_conflict_fails_the_actor_until_fixed(
    cluster: Cluster, operator: Operator
):
    cluster.create_namespace(NAMESPACE)
    cluster.apply(
        [
            flavor("small-memory", {"memory": "128Mi"}),
            flavor("large-memory", {"memory": "512Mi"}),
            {
                "apiVersion": "asya.sh/v1alpha1",
                "kind": "AsyncActor",
                "metadata": {"name": "torn", "namespace": NAMESPACE},
                "spec": {
                    "handler": "torn.handle",
                    "runtime": "python",
                    "image": "registry.local/torn:v1",
                    "flavors": ["small-memory", "large-memory"],
                },
            },
        ]
    )
    actor = wait_for_actor(
        cluster, NAMESPACE, "torn", phases=["Failed"], on_timeout=operator.log
    )
    valid = conditions(actor)["SpecValid"]
    assert valid["status"] == "False"
    assert valid["reason"] == "FlavorConflict"
    for word in ("small-memory", "large-memory", "sandbox.memory"):
        assert word in valid["message"], valid
    assert cluster.get(path_of("Deployment", NAMESPACE, "torn")) is None
    row = cluster.kubectl(
        "get", "asyncactor", "torn", "-n", NAMESPACE, "--no-headers"
    ).stdout.split()
    assert row[1] == "Failed", row
    events = cluster.kubectl_json(
        "get",
        "events.events.k8s.io",
        "-n",
        NAMESPACE,
        "--field-selector",
        "regarding.name=torn",
    )["items"]
    assert any(e["reason"] == "FlavorConflict" for e in events), events

    # The fix is in a Flavor, not in the actor: the operator's Flavor watch picks it up.
    cluster.apply([flavor("large-memory", {"cpuTimeout": "3s"})])
    actor = wait_for_actor(cluster, NAMESPACE, "torn", on_timeout=operator.log)
    valid = conditions(actor)["SpecValid"]
    assert valid["status"] == "True"
    assert "small-memory" in valid["message"] and "large-memory" in valid["message"]
    config = cluster.get(path_of("ConfigMap", NAMESPACE, "torn-asya"))
    assert "memory: 128Mi" in config["data"]["actor.yaml"]
    assert "cpuTimeout: 3s" in config["data"]["actor.yaml"]
