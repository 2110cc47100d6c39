"""Human in the loop over MCP elicitation, through the official MCP Python SDK: a tool call whose
route reaches `x-pause`, from a client that declared elicitation support, gets an
`elicitation/create` (form mode) with the pause prompt; accepting resumes the task with the
content merged into the payload and the same call returns the finished task; declining (or
cancelling) returns the paused task, which stays paused.

(A client without elicitation support gets the paused task back: see test_cli.py.)"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import pytest
from gateway_env import Gateway
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.context import RequestContext
from mcp.types import (
    CallToolResult,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    TextContent,
)

PROMPT = "Is the label right?"
#: What the gateway asks for when the pause gave no (flat object) schema of its own.
DEFAULT_SCHEMA = {
    "type": "object",
    "properties": {
        "response": {
            "type": "string",
            "description": "Your answer (merged into the payload as `response`)",
        }
    },
}
ENDED = ("succeeded", "failed", "canceled")


def call_with_elicitation(
    gateway: Gateway, answer: ElicitResult
) -> tuple[CallToolResult, list[ElicitRequestParams]]:
    """Calls `review-text` (preprocess, classify, x-pause, postprocess) as tenant A from a
    session that answers every elicitation with `answer`; returns the call's result and the
    elicitations received."""
    asked: list[ElicitRequestParams] = []

    async def elicit(
        context: RequestContext[ClientSession, Any], params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        asked.append(params)
        return answer

    async def main() -> CallToolResult:
        headers = {"Authorization": f"Bearer {gateway.key_a}"}
        timeout = httpx.Timeout(30, read=120)
        async with (
            httpx.AsyncClient(headers=headers, timeout=timeout) as http,
            streamable_http_client(gateway.mcp_url, http_client=http) as (
                read,
                write,
                _,
            ),
            ClientSession(read, write, elicitation_callback=elicit) as session,
        ):
            await session.initialize()
            with anyio.fail_after(180):
                return await session.call_tool(
                    "review-text", {"text": "Hello world", "pause_prompt": PROMPT}
                )

    return anyio.run(main), asked


def get_task(gateway: Gateway, task_id: str) -> dict[str, Any]:
    answer = httpx.get(
        gateway.url + f"v1/tasks/{task_id}",
        headers={"Authorization": f"Bearer {gateway.key_a}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    task: dict[str, Any] = answer.json()
    return task


def wait_ended(gateway: Gateway, task_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = get_task(gateway, task_id)
        if task["phase"] in ENDED or time.monotonic() > deadline:
            return task
        time.sleep(0.2)


def event_kinds(gateway: Gateway, task_id: str) -> list[str]:
    """The kinds of a finished task's events (the stream replays them, then ends)."""
    kinds = []
    with httpx.stream(
        "GET",
        gateway.url + f"v1/tasks/{task_id}/events",
        headers={"Authorization": f"Bearer {gateway.key_a}"},
        timeout=30,
    ) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kinds.append(line.removeprefix("event:").strip())
    return kinds


def resume_if_paused(gateway: Gateway, task_id: str) -> None:
    """Cleanup: a task left paused by a failing test is resumed (and runs to the end)."""
    if get_task(gateway, task_id)["phase"] == "paused":
        httpx.post(
            gateway.url + f"v1/tasks/{task_id}/resume",
            headers={"Authorization": f"Bearer {gateway.key_a}"},
            json={"input": {"response": "cleanup"}},
            timeout=10,
        )
        wait_ended(gateway, task_id)


def assert_asked_once(
    asked: list[ElicitRequestParams], result: CallToolResult
) -> ElicitRequestFormParams:
    assert len(asked) == 1, (
        "one elicitation/create when the call reaches x-pause from a client that declared "
        f"elicitation support; got {len(asked)}, and the call returned "
        f"{result.structuredContent}"
    )
    (params,) = asked
    assert isinstance(params, ElicitRequestFormParams), params
    assert params.mode == "form"
    assert params.message == PROMPT
    assert params.requestedSchema == DEFAULT_SCHEMA
    return params


def test_accepting_resumes_the_task_and_the_call_returns_its_result(
    gateway: Gateway,
) -> None:
    result, asked = call_with_elicitation(
        gateway, ElicitResult(action="accept", content={"response": "approved"})
    )
    content = result.structuredContent
    assert content is not None, result
    task_id = content["task_id"]
    try:
        assert_asked_once(asked, result)
        assert not result.isError, result
        assert content["phase"] == "succeeded", content
        payload = content["result"]
        assert payload["response"] == "approved"
        assert "pause_prompt" not in payload
        assert payload["label"] == "positive"
        # postprocess, after x-pause, ran on the resumed payload.
        assert payload["summary"].startswith("positive")
        texts = [c.text for c in result.content if isinstance(c, TextContent)]
        assert [json.loads(t) for t in texts] == [content]

        task = get_task(gateway, task_id)
        assert task["phase"] == "succeeded", task
        assert task["result"] == payload
        kinds = event_kinds(gateway, task_id)
        assert "paused" in kinds and "resumed" in kinds, kinds
        assert kinds.index("paused") < kinds.index("resumed"), kinds
        assert kinds[-1] == "succeeded", kinds
    finally:
        resume_if_paused(gateway, task_id)


@pytest.mark.parametrize("action", ["decline", "cancel"])
def test_declining_returns_the_paused_task_which_stays_paused(
    gateway: Gateway, action: str
) -> None:
    result, asked = call_with_elicitation(gateway, ElicitResult(action=action))  # type: ignore[arg-type]
    content = result.structuredContent
    assert content is not None, result
    task_id = content["task_id"]
    try:
        assert_asked_once(asked, result)
        assert not result.isError, result
        assert content["phase"] == "paused", content
        assert content["pause"]["prompt"] == PROMPT, content

        task = get_task(gateway, task_id)
        assert task["phase"] == "paused", task
        assert task["pause"]["prompt"] == PROMPT

        # A paused task can still be resumed over HTTP.
        resumed = httpx.post(
            gateway.url + f"v1/tasks/{task_id}/resume",
            headers={"Authorization": f"Bearer {gateway.key_a}"},
            json={"input": {"response": "later"}},
            timeout=10,
        )
        assert resumed.status_code == 200, resumed.text
        task = wait_ended(gateway, task_id)
        assert task["phase"] == "succeeded", task
        assert task["result"]["response"] == "later"
    finally:
        resume_if_paused(gateway, task_id)
