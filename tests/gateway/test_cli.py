"""The `asya` CLI against a real gateway: `asya mcp list/call/status`, `asya tasks ...`, and
`asya dev --gateway` serving the example pipeline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from asya.build import cache_dir
from gateway_env import EXAMPLE, Gateway, asya, free_port, stop, wait_healthy

TASK_LINE = re.compile(r"\[\.\] Task ID: ([0-9a-f-]{36})")


def test_mcp_list_shows_the_tool_and_its_arguments(cli_env: dict[str, str]) -> None:
    proc = asya(cli_env, "mcp", "list")
    assert proc.returncode == 0, proc.stderr
    assert "text-processor" in proc.stdout
    assert "--text string (required)" in proc.stdout
    assert "other-preprocess" not in proc.stdout


def test_mcp_call_shows_the_task_and_prints_the_result(cli_env: dict[str, str]) -> None:
    proc = asya(cli_env, "mcp", "call", "text-processor", "--text=Hello world")
    assert proc.returncode == 0, proc.stderr
    match = TASK_LINE.search(proc.stderr)
    assert match, proc.stderr
    task_id = match.group(1)
    assert "succeeded" in proc.stderr
    output = json.loads(proc.stdout)
    assert output["task_id"] == task_id
    assert output["phase"] == "succeeded"
    assert output["result"]["clean_text"] == "hello world"
    assert output["result"]["label"] == "positive"

    proc = asya(cli_env, "mcp", "status", task_id)
    assert proc.returncode == 0, proc.stderr
    task = json.loads(proc.stdout)
    assert (task["id"], task["phase"], task["tool"]) == (
        task_id,
        "succeeded",
        "text-processor",
    )
    assert task["result"] == output["result"]

    proc = asya(cli_env, "tasks", "list", "--phase", "succeeded", "--json")
    assert proc.returncode == 0, proc.stderr
    assert task_id in [t["id"] for t in json.loads(proc.stdout)]

    proc = asya(cli_env, "tasks", "cancel", task_id)
    assert proc.returncode == 1
    assert "conflict" in proc.stderr, proc.stderr


def test_mcp_call_checks_arguments_against_the_schema(cli_env: dict[str, str]) -> None:
    proc = asya(cli_env, "mcp", "call", "text-processor")
    assert proc.returncode == 2
    assert "missing required argument --text" in proc.stderr
    proc = asya(cli_env, "mcp", "call", "other-preprocess", "--text=x")
    assert proc.returncode == 1
    assert "no tool 'other-preprocess' (tools: " in proc.stderr


def test_mcp_call_no_wait_prints_the_task_id(cli_env: dict[str, str]) -> None:
    proc = asya(
        cli_env, "mcp", "call", "text-processor", "--no-wait", "--json", '{"text": "a"}'
    )
    assert proc.returncode == 0, proc.stderr
    output = json.loads(proc.stdout)
    assert output["phase"] == "pending"
    assert f"Task ID: {output['task_id']}" in proc.stderr


def test_a_paused_task_is_shown_and_resumed(cli_env: dict[str, str]) -> None:
    proc = asya(cli_env, "mcp", "call", "review-text", "--text=Hello world",
                "--pause_prompt=Is the label right?")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    output = json.loads(proc.stdout)
    task_id = output["task_id"]
    assert output["phase"] == "paused"
    assert output["pause"]["prompt"] == "Is the label right?"
    assert f"task {task_id} is paused: Is the label right?" in proc.stderr
    assert f"asya tasks resume {task_id} --input JSON" in proc.stderr

    proc = asya(cli_env, "tasks", "list", "--phase", "paused", "--json")
    assert proc.returncode == 0, proc.stderr
    assert task_id in [t["id"] for t in json.loads(proc.stdout)]
    proc = asya(cli_env, "tasks", "list", "--phase", "paused")
    assert proc.returncode == 0, proc.stderr
    assert task_id in proc.stdout, "the table shows whole ids"

    proc = asya(cli_env, "tasks", "resume", task_id, "--input", '{"approved": true}')
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == task_id
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        proc = asya(cli_env, "mcp", "status", task_id)
        task = json.loads(proc.stdout)
        if task["phase"] not in ("pending", "processing", "retrying"):
            break
        time.sleep(0.2)
    assert task["phase"] == "succeeded", task
    assert task["result"]["approved"] is True
    assert "pause_prompt" not in task["result"]
    assert task["result"]["summary"].startswith("positive")

    proc = asya(cli_env, "tasks", "resume", task_id, "--input", "{}")
    assert proc.returncode == 1
    assert "not_paused" in proc.stderr, proc.stderr


def test_unknown_tasks_are_not_found(cli_env: dict[str, str]) -> None:
    unknown = str(uuid.uuid4())
    proc = asya(cli_env, "tasks", "resume", unknown, "--input", "{}")
    assert proc.returncode == 1
    assert "not_found" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    proc = asya(cli_env, "mcp", "status", unknown)
    assert proc.returncode == 1
    assert "not_found" in proc.stderr, proc.stderr


def test_a_bad_token_is_a_clear_error(cli_env: dict[str, str]) -> None:
    proc = asya({**cli_env, "ASYA_CLI_TOKEN": "nope"}, "mcp", "list")
    assert proc.returncode == 1
    assert "refused the API key (401" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    proc = asya({**cli_env, "ASYA_CLI_TOKEN": "nope"}, "tasks", "list")
    assert proc.returncode == 1
    assert "refused the API key (401" in proc.stderr, proc.stderr


def test_dev_gateway_serves_the_example_with_a_fresh_key(
    gateway_binary: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HOME": str(tmp_path),  # the key goes to this ~/.asya/gateway-token
        "ASYA_CACHE_DIR": str(cache_dir()),  # the real build cache: no rebuilds
        "ASYA_GATEWAY_BIN": str(gateway_binary),
    }
    env.pop("ASYA_CLI_TOKEN", None)
    log = tmp_path / "dev.log"
    cli = Path(sys.executable).parent / "asya"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(cli),
                "dev",
                str(EXAMPLE),
                "--gateway",
                "--listen",
                f"127.0.0.1:{port}",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        token = tmp_path / ".asya" / "gateway-token"
        url = f"http://127.0.0.1:{port}/"
        running = Gateway(url, key_a="", key_b="", log=log)
        wait_healthy(running, process, timeout=300)  # builds (cached) first
        assert f"export ASYA_CLI_MCP_URL={url}" in log.read_text()
        assert oct(token.stat().st_mode & 0o777) == "0o600"
        key = token.read_text().strip()
        config = (EXAMPLE / ".asya" / "gateway.yaml").read_text()
        assert key not in config

        tools = httpx.get(url + "v1/tools", headers={"Authorization": f"Bearer {key}"})
        assert tools.status_code == 200, tools.text
        assert [t["name"] for t in tools.json()["tools"]] == ["text-processor"]
        assert tools.json()["tools"][0]["timeout"] == "2m"

        # The CLI finds the key in ~/.asya/gateway-token by itself.
        proc = asya({**env, "ASYA_CLI_MCP_URL": url}, "mcp", "call", "text-processor",
                    "--text", "what a wonderful day")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["result"]["label"] == "positive"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = stop(process)
    assert code == 0, f"a clean exit on SIGINT:\n{log.read_text()}"
