"""The gateway's MCP server, through the MCP Inspector's CLI (the reference client of the MCP
project; scripts/setup.sh installs it under .cache/npm-inspector)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gateway_env import INSPECTOR_PREFIX, Gateway


def inspector() -> Path:
    binary = INSPECTOR_PREFIX / "node_modules" / ".bin" / "mcp-inspector"
    if not binary.is_file():
        pytest.fail(
            f"the MCP Inspector is not installed in {INSPECTOR_PREFIX}: run scripts/setup.sh "
            "(it needs npm)"
        )
    if shutil.which("node") is None:
        pytest.fail("the MCP Inspector needs node on PATH")
    return binary


def run_inspector(gateway: Gateway, tmp_path: Path, *args: str) -> dict[str, Any]:
    cmd = [str(inspector()), "--cli", gateway.mcp_url, "--transport", "http",
           "--header", f"Authorization: Bearer {gateway.key_a}", *args]  # fmt: skip
    # A catalog of its own: the Inspector writes one (~/.mcp-inspector/mcp.json by default).
    env = {**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "mcp.json")}
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{cmd}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def test_inspector_lists_the_tool(gateway: Gateway, tmp_path: Path) -> None:
    answer = run_inspector(gateway, tmp_path, "--method", "tools/list")
    tools = {t["name"]: t for t in answer["tools"]}
    assert set(tools) == {"text-processor", "review-text"}
    assert tools["text-processor"]["inputSchema"]["required"] == ["text"]


def test_inspector_calls_the_tool(gateway: Gateway, tmp_path: Path) -> None:
    answer = run_inspector(
        gateway,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "text-processor",
        "--tool-arg",
        "text=hello",
    )
    assert answer.get("isError") in (None, False), answer
    content = answer["structuredContent"]
    assert content["phase"] == "succeeded", answer
    assert content["result"]["clean_text"] == "hello"
    assert json.loads(answer["content"][0]["text"]) == content
