"""The gateway's MCP server, through the official MCP Python SDK: each tenant sees its own tools,
a tool call reports a progress notification per hop and returns the task's result, and a bad
API key is refused with 401."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from gateway_env import Gateway
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import INVALID_PARAMS, CallToolResult, TextContent

T = TypeVar("T")


def with_session(
    gateway: Gateway, key: str, body: Callable[[ClientSession], Awaitable[T]]
) -> T:
    """Runs `body` in an initialized MCP session with the gateway, as the tenant of `key`."""

    async def main() -> T:
        headers = {"Authorization": f"Bearer {key}"}
        timeout = httpx.Timeout(30, read=120)
        async with (
            httpx.AsyncClient(headers=headers, timeout=timeout) as http,
            streamable_http_client(gateway.mcp_url, http_client=http) as (
                read,
                write,
                _,
            ),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await body(session)

    return anyio.run(main)


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def tool_names(gateway: Gateway, key: str) -> list[str]:
    async def body(session: ClientSession) -> list[str]:
        return [t.name for t in (await session.list_tools()).tools]

    return with_session(gateway, key, body)


def test_each_tenant_lists_only_its_own_tools(gateway: Gateway) -> None:
    async def body(session: ClientSession) -> dict[str, Any]:
        return {t.name: t for t in (await session.list_tools()).tools}

    tools = with_session(gateway, gateway.key_a, body)
    assert "text-processor" in tools
    assert "other-preprocess" not in tools
    schema = tools["text-processor"].inputSchema
    assert schema["required"] == ["text"]
    assert schema["properties"]["text"]["type"] == "string"
    assert tools["text-processor"].description
    assert tool_names(gateway, gateway.key_b) == ["other-preprocess"]


def test_a_call_reports_each_hop_and_returns_the_result(gateway: Gateway) -> None:
    notes: list[tuple[float, float | None, str | None]] = []

    async def progress(
        progress: float, total: float | None, message: str | None
    ) -> None:
        notes.append((progress, total, message))

    async def body(session: ClientSession) -> CallToolResult:
        return await session.call_tool(
            "text-processor", {"text": "Hello world"}, progress_callback=progress
        )

    result = with_session(gateway, gateway.key_a, body)
    assert not result.isError, result
    content = result.structuredContent
    assert content is not None
    assert content["phase"] == "succeeded", content
    task_id = content["task_id"]
    payload = content["result"]
    assert payload["clean_text"] == "hello world"
    assert payload["label"] == "positive"
    assert payload["summary"].startswith("positive")
    # The same JSON as one text content.
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    assert [json.loads(t) for t in texts] == [content]

    messages = [m or "" for _, _, m in notes]
    assert messages[0] == f"{task_id}: created", notes
    assert all(m.startswith(f"{task_id}: ") for m in messages), notes
    hops = [m for m in messages if m.split(": ", 1)[1].startswith("hop")]
    # preprocess, classify, judge (which inserts refine, judge), postprocess.
    assert len(hops) >= 4, notes
    done = [p for p, _, _ in notes]
    assert done == sorted(done), f"progress never goes back: {notes}"
    last_progress, last_total, _ = notes[-1]
    assert last_total is not None and last_progress == last_total, notes

    # The task is kept: the HTTP API shows it to its tenant only.
    task = httpx.get(
        gateway.url + f"v1/tasks/{task_id}",
        headers={"Authorization": f"Bearer {gateway.key_a}"},
        timeout=10,
    )
    assert task.status_code == 200, task.text
    assert task.json()["phase"] == "succeeded"
    assert task.json()["result"] == payload
    hidden = httpx.get(
        gateway.url + f"v1/tasks/{task_id}",
        headers={"Authorization": f"Bearer {gateway.key_b}"},
        timeout=10,
    )
    assert hidden.status_code == 404, hidden.text
    assert hidden.json()["error"]["code"] == "not_found"


def test_no_wait_returns_the_task_at_once(gateway: Gateway) -> None:
    async def body(session: ClientSession) -> CallToolResult:
        return await session.call_tool(
            "text-processor", {"text": "later"}, meta={"asya.sh/wait": False}
        )

    result = with_session(gateway, gateway.key_a, body)
    content = result.structuredContent
    assert content is not None and content["phase"] == "pending", result
    headers = {"Authorization": f"Bearer {gateway.key_a}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = httpx.get(
            gateway.url + f"v1/tasks/{content['task_id']}", headers=headers, timeout=10
        ).json()
        if task["phase"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.2)
    assert task["phase"] == "succeeded", task
    assert task["result"]["clean_text"] == "later"


def test_another_tenants_tool_is_an_error_naming_it(gateway: Gateway) -> None:
    async def body(session: ClientSession) -> CallToolResult:
        return await session.call_tool("other-preprocess", {"text": "x"})

    with pytest.raises(BaseException) as info:  # inside the SDK's task groups
        with_session(gateway, gateway.key_a, body)
    errors = [e for e in leaves(info.value) if isinstance(e, McpError)]
    assert len(errors) == 1, repr(info.value)
    assert errors[0].error.code == INVALID_PARAMS
    assert "other-preprocess" in errors[0].error.message


def test_a_bad_api_key_is_refused_with_401(gateway: Gateway) -> None:
    with pytest.raises(BaseException) as info:  # the SDK raises inside its task groups
        tool_names(gateway, "not-a-key")
    statuses = [
        e.response.status_code
        for e in leaves(info.value)
        if isinstance(e, httpx.HTTPStatusError)
    ]
    assert statuses == [401], repr(info.value)

    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in (
        {},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic eA=="},
    ):
        answer = httpx.post(
            gateway.mcp_url, json=initialize, headers={**accept, **headers}, timeout=10
        )
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["error"]["code"] == "unauthorized"
    answer = httpx.get(gateway.url + "v1/tools", headers={"Authorization": "Bearer x"})
    assert answer.status_code == 401
    # Health and the API description need no key.
    assert httpx.get(gateway.url + "healthz").json() == {"status": "ok"}
    assert httpx.get(gateway.url + "openapi.json").json()["openapi"].startswith("3.1")
