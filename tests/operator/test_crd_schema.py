"""The generated CRDs: valid CustomResourceDefinitions, and their schemas accept the example
AsyncActors and reject bad ones (bad name, unknown runtime, formula without target) with a
message naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from k8s_checks import ROOT, validate_kubernetes

EXAMPLES = sorted(
    [
        *(ROOT / "examples").glob("*/actors/*.yaml"),
        ROOT / "tests/fixtures/actors/echo.yaml",
    ]
)


def actors(path: Path):
    return [
        doc
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "AsyncActor"
    ]


def test_crds_are_valid_custom_resource_definitions(crds):
    assert set(crds) == {"AsyncActor", "Flavor", "AsyncActorPool"}
    for crd in crds.values():
        validate_kubernetes(crd)
    actor = crds["AsyncActor"]
    assert actor["spec"]["scope"] == "Namespaced"
    assert actor["spec"]["names"]["shortNames"] == ["asya", "asyas"]
    columns = [
        c["name"] for c in actor["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    assert columns == ["Phase", "Runtime", "Ready", "Desired", "Transport", "Age"]
    assert crds["Flavor"]["spec"]["scope"] == "Cluster"
    # `kubectl get asya NAME` names the short name, not a category (kubectl expands a
    # category first, and a category over several kinds refuses a name).
    for crd in crds.values():
        assert "asya" not in crd["spec"]["names"].get("categories", [])
    pool = crds["AsyncActorPool"]
    assert pool["spec"]["scope"] == "Namespaced"
    assert pool["spec"]["names"]["shortNames"] == ["asyapool"]


@pytest.mark.parametrize(
    "path", EXAMPLES, ids=lambda p: f"{p.parent.parent.name}/{p.name}"
)
def test_example_actors_are_valid(path: Path, actor_schema):
    docs = actors(path)
    assert docs
    for doc in docs:
        actor_schema.validate(doc)


def messages(schema, doc) -> str:
    return "\n".join(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in schema.iter_errors(doc)
    )


def base_actor():
    return copy.deepcopy(
        actors(ROOT / "examples/text-pipeline/actors/classify.yaml")[0]
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda a: a["metadata"].update(name="Bad_Name"),
            "metadata.name: 'Bad_Name' does not match",
        ),
        (lambda a: a["metadata"].update(name="x" * 64), "metadata.name"),
        (
            lambda a: a["spec"].update(runtime="java"),
            "spec.runtime: 'java' is not one of ['wasm', 'python']",
        ),
        (
            lambda a: a["spec"]["scaling"].update(advanced={"formula": "queue / 2"}),
            "spec.scaling.advanced: 'target' is a required property",
        ),
        (
            lambda a: a["spec"].update(mode="stream"),
            "spec.mode: 'stream' is not one of ['payload', 'envelope']",
        ),
        (
            lambda a: a["spec"]["sandbox"].update(memory=["256Mi"]),
            "spec.sandbox.memory: ['256Mi'] is not valid under any of the given schemas",
        ),
    ],
    ids=[
        "bad-name",
        "long-name",
        "unknown-runtime",
        "formula-without-target",
        "bad-mode",
        "memory-not-a-quantity",
    ],
)
def test_bad_actors_are_rejected_with_the_field(change, expected, actor_schema):
    doc = base_actor()
    actor_schema.validate(doc)
    change(doc)
    with pytest.raises(jsonschema.ValidationError):
        actor_schema.validate(doc)
    assert expected in messages(actor_schema, doc)


def test_formula_with_target_and_both_replica_spellings_are_accepted(actor_schema):
    doc = base_actor()
    doc["spec"]["scaling"] = {
        "minReplicas": 0,
        "maxReplicas": 3,
        "advanced": {"formula": "queue / 2", "target": "5"},
    }
    actor_schema.validate(doc)


def test_rules_json_schema_cannot_express_are_cel_rules(crds):
    """Reserved names, python without an image, alias disagreement and an empty target are CEL
    rules (checked by the API server; the reconciler checks the same in Rust, see
    operator/src/validate.rs)."""
    schema = crds["AsyncActor"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root = " ".join(r["message"] for r in schema["x-kubernetes-validations"])
    assert "reserved" in root and "1-63 lowercase" in root
    spec = schema["properties"]["spec"]
    assert any(
        "needs spec.image" in r["message"] for r in spec["x-kubernetes-validations"]
    )
    scaling = spec["properties"]["scaling"]
    assert any(
        "alias minReplicas" in r["message"] for r in scaling["x-kubernetes-validations"]
    )
    advanced = scaling["properties"]["advanced"]
    assert (
        "needs scaling.advanced.target"
        in advanced["x-kubernetes-validations"][0]["message"]
    )


def test_field_rules_are_cel_rules_with_the_shared_messages(crds):
    """Durations, byte sizes and ranges are stated as CEL rules carrying the words the host and
    the SDK use (the API server evaluates them; tests/spec_contract.rs evaluates them with
    kube-cel against the host)."""
    schema = crds["AsyncActor"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]

    def messages(node):
        return [v["message"] for v in node.get("x-kubernetes-validations", [])]

    assert any(
        m.startswith("must be a duration")
        for m in messages(spec["sandbox"]["properties"]["cpuTimeout"])
    )
    assert any(
        m.startswith("must be a byte size")
        for m in messages(spec["sandbox"]["properties"]["memory"])
    )
    assert "must be at least 0" in messages(
        spec["scaling"]["properties"]["minReplicaCount"]
    )
    assert "pattern" not in spec["sandbox"]["properties"]["cpuTimeout"]
