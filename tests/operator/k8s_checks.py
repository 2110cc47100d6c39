"""Helpers of the operator validation tests: the built `asya-operator` binary, the CRD schemas
it generates (as JSON Schema) and Kubernetes schema validation (kubernetes-validate)."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "target" / "release" / "asya-operator"
CHART = ROOT / "charts" / "asya"
# The Kubernetes version the manifests are validated against (the operator builds with
# k8s-openapi's v1_33 feature).
KUBE_VERSION = "1.33.0"


def run_operator(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert OPERATOR.is_file(), f"{OPERATOR} is missing: run scripts/setup.sh"
    return subprocess.run(
        [str(OPERATOR), *args], capture_output=True, text=True, check=check, timeout=60
    )


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(
    *files: Path | str,
    flavors: tuple[Path | str, ...] = (),
    uid: str | None = None,
    settings: tuple[str, ...] = (),
    dedicated: bool = True,
):
    """`asya-operator render` on files; `settings` are more flags (`--aws-region`, ...).
    `dedicated` renders every actor with its own Deployment (what most checks here look at);
    without it wasm actors render as their host pool's objects."""
    args = ["render", *settings]
    if dedicated:
        args.append("--dedicated")
    for file in files:
        args += ["-f", str(file)]
    for flavor in flavors:
        args += ["--flavor", str(flavor)]
    if uid:
        args += ["--owner-uid", uid]
    return documents(run_operator(*args).stdout)


def openapi_to_jsonschema(schema: Any) -> Any:
    """OpenAPI v3 (as in a CRD) to JSON Schema: `nullable: true` becomes a null type; the
    x-kubernetes-* extensions are left for the validator to ignore."""
    if isinstance(schema, list):
        return [openapi_to_jsonschema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: openapi_to_jsonschema(value) for key, value in schema.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def crd_validator(crd: dict[str, Any]) -> jsonschema.protocols.Validator:
    schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    schema = openapi_to_jsonschema(schema)
    cls = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    return cls(schema)


def validate_kubernetes(obj: dict[str, Any]) -> None:
    """Validates a built-in kind against the real Kubernetes schema (strict: unknown fields
    are errors)."""
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
