"""AsyncActor manifests are validated against the AsyncActor JSON Schema the SDK ships: every
example and fixture loads, and each kind of mistake gives one message naming the file, the actor,
the field and the rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from asya.handler_ref import BuildError
from asya.manifest import actor_schema, load_actors

REPO = Path(__file__).resolve().parents[2]
ACTOR_DIRS = sorted(
    {
        p.parent
        for p in [
            *REPO.glob("examples/*/actors/*.yaml"),
            *REPO.glob("tests/fixtures/**/actors/*.yaml"),
        ]
    }
)


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = actor_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["title"] == "AsyncActor"
    assert {"apiVersion", "kind", "metadata"} <= set(schema["required"])


@pytest.mark.parametrize("directory", ACTOR_DIRS, ids=lambda p: str(p.relative_to(REPO)))
def test_examples_and_fixtures_load(directory: Path) -> None:
    actors = load_actors(directory)
    assert actors
    assert all(a.handler and a.mode in ("payload", "envelope") for a in actors)


def write(tmp_path: Path, body: str, *, api: str = "asya.sh/v1alpha1") -> Path:
    path = tmp_path / "actor.yaml"
    path.write_text(f"apiVersion: {api}\nkind: AsyncActor\n{body}\n")
    return path


def error_of(tmp_path: Path, body: str, **kw: str) -> str:
    path = write(tmp_path, body, **kw)
    with pytest.raises(BuildError) as info:
        load_actors(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "metadata: {name: a}\nspec: {handler: m.f, resiliency: {actorTimeout: 5 seconds}}",
            r"actor 'a': spec\.resiliency\.actorTimeout: must be a duration",
        ),
        (
            "metadata: {name: a}\nspec: {handler: m.f, sandbox: {cpuTimeout: [5]}}",
            r"actor 'a': spec\.sandbox\.cpuTimeout: must be a duration",
        ),
        (
            "metadata: {name: a}\n"
            "spec: {handler: m.f, resiliency: {policies: {default: {maxAttempts: -1}}}}",
            r"actor 'a': spec\.resiliency\.policies\.default\.maxAttempts: "
            r"must be between 1 and 1000",
        ),
        (
            "metadata: {name: x-sink}\nspec: {handler: m.f}",
            "actor 'x-sink': metadata\\.name: is reserved for the host's built-in actors",
        ),
        (
            "metadata: {name: Not_A_Name}\nspec: {handler: m.f}",
            "actor 'Not_A_Name': metadata\\.name: must be 1-63 lowercase letters",
        ),
        (
            "metadata: {name: a}\nspec: {handler: m.f, runtime: jvm}",
            r"actor 'a': spec\.runtime: ('jvm' is not one of|must )",
        ),
        (
            "metadata: {name: a}\nspec: {handler: m.f, tolerations: [{effect: Sometimes}]}",
            r"actor 'a': spec\.tolerations\[0\]\.effect: ('Sometimes' is not one of|must )",
        ),
        (
            "metadata: {name: a}\nspec: {handler: m.f, sandbox: {memory: [1]}}",
            r"actor 'a': spec\.sandbox\.memory: "
            r"(\[1\] is not of type 'integer', 'string'|must be a byte size)",
        ),
        (
            "metadata: {name: a}\nspec: {handler: m.f, resiliency: {rules: [{errors: [E]}]}}",
            r"actor 'a': spec\.resiliency\.rules\[0\]\.policy: is required",
        ),
        ("metadata: {}\nspec: {handler: m.f}", r"AsyncActor #1: metadata\.name: is required"),
        ("metadata: {name: a}", r"actor 'a': spec\.handler: is required"),
        ("metadata: {name: a}\nspec: {mode: payload}", r"actor 'a': spec\.handler: is required"),
    ],
)
def test_each_mistake_names_the_field(tmp_path: Path, body: str, expected: str) -> None:
    message = error_of(tmp_path, body)
    # The rule as the schema words it (the generated schema may word some differently).
    assert re.search(expected, message), message
    assert len(message.splitlines()) == 1, message


def test_a_wrong_api_version_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path, "metadata: {name: a}\nspec: {handler: m.f}", api="asya.sh/v1")
    assert "actor 'a': apiVersion: " in message and "asya.sh/v1alpha1" in message, message


def test_every_problem_is_reported_once_in_field_order(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "metadata: {name: x-sump}\n"
        "spec: {handler: m.f, sandbox: {cpuTimeout: soon}, resiliency: {actorTimeout: never}}",
        api="v1",
    )
    fields = [line.split(": ")[2] for line in message.splitlines()]
    assert fields == [
        "apiVersion",
        "metadata.name",
        "spec.resiliency.actorTimeout",
        "spec.sandbox.cpuTimeout",
    ], message


def test_other_kinds_and_pipeline_yaml_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text("route: [a]\n")
    (tmp_path / "flavor.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: Flavor\nmetadata: {name: X_not_checked}\n"
    )
    write(tmp_path, "metadata: {name: a}\nspec: {handler: m.f, mode: null, runtime: null}")
    [actor] = load_actors(tmp_path)
    assert (actor.name, actor.handler, actor.mode, actor.runtime) == ("a", "m.f", "payload", "wasm")


def test_x_asya_message_of_a_referenced_definition_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generated schema may refer to shared definitions (`$defs`) through nullable unions;
    the rule is still the definition's `x-asya-message`, and closed objects name unknown fields."""
    import asya.manifest as manifest

    schema = json.loads(json.dumps(actor_schema()))
    schema["$defs"] |= {
        "ByteSize": {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+Mi$"},
            ],
            "x-asya-message": "must be a byte size such as 256Mi",
        }
    }
    sandbox = schema["$defs"]["Sandbox"]
    sandbox["properties"]["memory"] = {"anyOf": [{"$ref": "#/$defs/ByteSize"}, {"type": "null"}]}
    sandbox["additionalProperties"] = False
    manifest._validator.cache_clear()
    monkeypatch.setattr(manifest, "actor_schema", lambda: schema)
    try:
        message = error_of(
            tmp_path,
            "metadata: {name: a}\nspec: {handler: m.f, sandbox: {memory: 1Zi, cpuTimout: 1s}}",
        )
    finally:
        manifest._validator.cache_clear()
    prefix = f"{tmp_path / 'actor.yaml'}: actor 'a': spec.sandbox."
    assert prefix + "memory: must be a byte size such as 256Mi" in message.splitlines()
