"""Fixtures of the operator validation tests (helpers are in k8s_checks.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from k8s_checks import crd_validator, documents, run_operator


@pytest.fixture(scope="session")
def crds() -> dict[str, dict[str, Any]]:
    """The CRDs `asya-operator crd` prints, by kind."""
    docs = documents(run_operator("crd").stdout)
    return {doc["spec"]["names"]["kind"]: doc for doc in docs}


@pytest.fixture(scope="session")
def actor_schema(crds):
    return crd_validator(crds["AsyncActor"])


@pytest.fixture(scope="session")
def flavor_schema(crds):
    return crd_validator(crds["Flavor"])


def keda_schema(name: str) -> jsonschema.protocols.Validator:
    schema = yaml.safe_load((Path(__file__).parent / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="session")
def scaled_object_schema():
    return keda_schema("keda-scaledobject.schema.yaml")


@pytest.fixture(scope="session")
def trigger_authentication_schema():
    return keda_schema("keda-triggerauthentication.schema.yaml")
