"""The gateway's HTTP API against its own OpenAPI document (`GET /openapi.json`), with
Schemathesis: generated requests (valid and invalid) to every operation; no answer may be a
server error, or a status, content type or body the document does not declare."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from gateway_env import Gateway

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


def test_the_openapi_document_is_openapi_3_1(gateway: Gateway) -> None:
    answer = httpx.get(gateway.url + "openapi.json", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    document = answer.json()
    assert document["openapi"].startswith("3.1")
    for path in ("/v1/tools", "/v1/tasks", "/v1/tasks/{id}", "/v1/tasks/{id}/resume"):
        assert any(p.replace("{task_id}", "{id}") == path for p in document["paths"]), (
            path
        )


def test_the_api_conforms_to_its_openapi_document(
    gateway: Gateway, tmp_path: Path
) -> None:
    st = Path(sys.executable).parent / "st"
    # Bounded: at most 20 generated cases per operation, a fixed seed (the same cases each run).
    cmd = [str(st), "run", gateway.url + "openapi.json", "--url", gateway.url.rstrip("/"),
           "--header", f"Authorization: Bearer {gateway.key_a}",
           "--checks", ",".join(CHECKS), "--max-examples", "20", "--seed", "20250601",
           "--request-timeout", "15", "--workers", "2", "--no-color",
           "--report", "junit", "--report-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=170, check=False, cwd=tmp_path
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
