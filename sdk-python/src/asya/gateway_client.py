"""A client of the asya gateway: its MCP server (tools) and its HTTP API (tasks).

Where the gateway is: `--url`, else `$ASYA_CLI_MCP_URL` (`http://127.0.0.1:8089/`: the MCP
endpoint is that URL + `mcp`, the HTTP API that URL + `v1/...`). The API key: `--token`, else
`$ASYA_CLI_TOKEN`, else the file `~/.asya/gateway-token` that `asya dev --gateway` writes.

Every problem (no URL, the gateway unreachable, the key refused, an error answer) is raised as a
`GatewayError` whose message is meant for the user as it is.

The MCP SDK and httpx are imported by the calls that use them (they take most of a second to
import, which every other `asya` command would pay).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import CallToolResult, Tool

URL_ENV = "ASYA_CLI_MCP_URL"
TOKEN_ENV = "ASYA_CLI_TOKEN"
#: `_meta` key of a `tools/call` that asks the gateway not to wait for the task to end.
WAIT_META = "asya.sh/wait"
#: Seconds to wait for a connection, a request to be sent, or an answer that is not a task run.
TIMEOUT = 30.0

T = TypeVar("T")


def token_file() -> Path:
    """Where `asya dev --gateway` leaves the API key of its gateway: `~/.asya/gateway-token`."""
    return Path.home() / ".asya" / "gateway-token"


class GatewayError(Exception):
    """A problem talking to the gateway; the message is meant for the user."""


class GatewayHTTPError(GatewayError):
    """An error answer of the gateway's HTTP API: `{"error": {"code": ..., "message": ...}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway is and the API key to show it."""

    #: The gateway's root URL, ending with `/`.
    base_url: str
    token: str

    @property
    def mcp_url(self) -> str:
        """The MCP (Streamable HTTP) endpoint."""
        return self.base_url + "mcp"

    def api_url(self, path: str) -> str:
        """The URL of HTTP API `path` (`v1/tasks`)."""
        return self.base_url + path.lstrip("/")

    @property
    def headers(self) -> dict[str, str]:
        """The headers of every request."""
        return {"Authorization": f"Bearer {self.token}"}

    @classmethod
    def resolve(cls, url: str | None = None, token: str | None = None) -> GatewaySettings:
        """Settings from the given values, else the environment, else the token file."""
        url = url or os.environ.get(URL_ENV)
        if not url:
            raise GatewayError(
                f"no gateway URL: pass --url or set {URL_ENV} "
                f"(e.g. export {URL_ENV}=http://127.0.0.1:8089/)"
            )
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            path = token_file()
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError:
                token = ""
            if not token:
                raise GatewayError(
                    f"no API key: pass --token, set {TOKEN_ENV}, or start a local gateway "
                    f"with `asya dev PIPELINE_DIR --gateway` (it writes {path})"
                )
        return cls(base_url=normalize_url(url), token=token)


def normalize_url(url: str) -> str:
    """The gateway's root URL, ending with `/`, from what a user may give: the root with or
    without its `/`, or the MCP endpoint itself (`.../mcp`)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GatewayError(f"{url!r} is not an http(s) URL of the gateway")
    path = parts.path.rstrip("/")
    if path.endswith("/mcp") or path == "mcp":
        path = path[: -len("mcp")].rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path + "/", "", ""))


@dataclass(frozen=True)
class ProgressUpdate:
    """One progress notification of a tool call: `progress` hops of `total` are done."""

    progress: float
    total: float | None
    #: The task, the event kind (`created`, `hop`, `retrying`, `paused`, ...) and the actor,
    #: from the notification's message `"<task id>: <kind> <actor>"` (None where it has none).
    task_id: str | None
    kind: str | None
    actor: str | None
    message: str | None


def parse_progress_message(message: str | None) -> tuple[str | None, str | None, str | None]:
    """(task id, kind, actor) of a progress message `"<task id>: <kind> <actor>"`; a part the
    message lacks is None."""
    if not message:
        return None, None, None
    task_id, sep, rest = message.partition(": ")
    if not sep:
        return None, None, None
    kind, _, actor = rest.strip().partition(" ")
    return task_id.strip() or None, kind or None, actor.strip() or None


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call returned: the structured content
    (`{"task_id", "phase", "result" | "reason", "error" | "pause"}`)."""

    content: dict[str, Any]
    is_error: bool

    @property
    def task_id(self) -> str | None:
        value = self.content.get("task_id")
        return value if isinstance(value, str) else None

    @property
    def phase(self) -> str | None:
        value = self.content.get("phase")
        return value if isinstance(value, str) else None

    @classmethod
    def from_result(cls, result: CallToolResult) -> ToolOutcome:
        """The structured content, else the JSON object of the first text content, else the
        text itself under `text`."""
        from mcp.types import TextContent

        if isinstance(result.structuredContent, dict):
            return cls(dict(result.structuredContent), result.isError)
        texts = [c.text for c in result.content if isinstance(c, TextContent)]
        for text in texts:
            try:
                data = json.loads(text)
            except ValueError:
                continue
            if isinstance(data, dict):
                return cls(data, result.isError)
        return cls({"text": "\n".join(texts)}, result.isError)


ProgressFn = Callable[[ProgressUpdate], None]


class GatewayClient:
    """The gateway's MCP tools and HTTP task API, as blocking calls."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    # --- MCP ---------------------------------------------------------------------------------

    def list_tools(self) -> list[Tool]:
        """The tenant's tools (`tools/list`, every page)."""
        import anyio

        async def run(session: ClientSession) -> list[Tool]:
            tools: list[Tool] = []
            cursor: str | None = None
            with anyio.fail_after(TIMEOUT):
                while True:
                    page = await session.list_tools(cursor)
                    tools += page.tools
                    cursor = page.nextCursor
                    if not cursor:
                        return tools

        return self._mcp(run)

    def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        on_progress: ProgressFn | None = None,
        wait: bool = True,
    ) -> ToolOutcome:
        """Calls tool `name` with `arguments` (the task's payload). With `wait`, returns once the
        task ended (or paused), reporting each progress notification to `on_progress`;
        without, returns at once with the task's id (phase `pending`)."""

        async def report(progress: float, total: float | None, message: str | None) -> None:
            if on_progress is not None:
                task_id, kind, actor = parse_progress_message(message)
                on_progress(ProgressUpdate(progress, total, task_id, kind, actor, message))

        async def run(session: ClientSession) -> ToolOutcome:
            result = await session.call_tool(
                name,
                arguments,
                progress_callback=report if wait else None,
                meta=None if wait else {WAIT_META: False},
            )
            return ToolOutcome.from_result(result)

        return self._mcp(run)

    def _mcp(self, body: Callable[[ClientSession], Awaitable[T]]) -> T:
        import anyio

        async def main() -> T:
            async with self._session() as session:
                return await body(session)

        try:
            return anyio.run(main)
        except GatewayError:
            raise
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from None

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[ClientSession]:
        import anyio
        import httpx
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        # No read timeout: a tools/call answers when its task ends (the tool's timeout bounds it).
        timeout = httpx.Timeout(TIMEOUT, read=None)
        async with (
            httpx.AsyncClient(headers=self.settings.headers, timeout=timeout) as http,
            streamable_http_client(self.settings.mcp_url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            with anyio.fail_after(TIMEOUT):
                await session.initialize()
            yield session

    def _translate(self, exc: BaseException) -> GatewayError | None:
        """The user's message for an error of an MCP exchange (found inside exception groups)."""
        import httpx
        from mcp import McpError

        for leaf in _leaves(exc):
            if isinstance(leaf, GatewayError):
                return leaf
            if isinstance(leaf, McpError):
                return GatewayError(f"the gateway answered: {leaf.error.message}")
            if isinstance(leaf, httpx.HTTPStatusError):
                return self._status_error(leaf.response.status_code, None)
            if isinstance(leaf, httpx.TransportError):
                return self._unreachable(leaf)
            if isinstance(leaf, TimeoutError):
                return GatewayError(
                    f"the gateway at {self.settings.base_url} did not answer within {TIMEOUT:.0f} s"
                )
        return None

    # --- HTTP API ----------------------------------------------------------------------------

    def get_task(self, task_id: str) -> dict[str, Any]:
        """`GET /v1/tasks/{id}`: the task."""
        return self._object("GET", f"v1/tasks/{_segment(task_id)}")

    def list_tasks(
        self, phase: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """`GET /v1/tasks`: the tenant's tasks, newest first (only those in `phase`, if given)."""
        params: dict[str, str | int] = {}
        if phase:
            params["phase"] = phase
        if limit is not None:
            params["limit"] = limit
        body = self._object("GET", "v1/tasks", params=params)
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise GatewayError(f"the gateway's task list has no `tasks` list: {body}")
        return [t for t in tasks if isinstance(t, dict)]

    def resume_task(self, task_id: str, input: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/tasks/{id}/resume`: merges `input` into a paused task's payload and lets it
        go on; returns the task."""
        return self._object("POST", f"v1/tasks/{_segment(task_id)}/resume", json={"input": input})

    def cancel_task(self, task_id: str) -> dict[str, Any]:
        """`POST /v1/tasks/{id}/cancel`: the task, canceled."""
        return self._object("POST", f"v1/tasks/{_segment(task_id)}/cancel")

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        url = self.settings.api_url(path)
        try:
            with httpx.Client(headers=self.settings.headers, timeout=TIMEOUT) as http:
                response = http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict):
            return body
        if response.is_success:
            raise GatewayError(f"{method} {url}: the gateway answered something not a JSON object")
        raise self._status_error(response.status_code, body)

    # --- errors ------------------------------------------------------------------------------

    def _status_error(self, status: int, body: object) -> GatewayError:
        from http import HTTPStatus

        code, message = _error_fields(body)
        if status == 401:
            return GatewayError(
                f"the gateway at {self.settings.base_url} refused the API key (401"
                + (f": {message}" if message else "")
                + f"): pass --token, set {TOKEN_ENV}, or check {token_file()}"
            )
        if code is None:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "error"
            return GatewayHTTPError(
                status, phrase.lower().replace(" ", "_"), f"HTTP {status} {phrase}"
            )
        return GatewayHTTPError(status, code, message or code)

    def _unreachable(self, exc: Exception) -> GatewayError:
        detail = str(exc) or type(exc).__name__
        return GatewayError(
            f"cannot reach the gateway at {self.settings.base_url}: {detail} "
            f"(is it running? `asya dev PIPELINE_DIR --gateway` starts one)"
        )


def _segment(value: str) -> str:
    """`value` as one path segment (a task id never escapes its place in the URL)."""
    return quote(value, safe="")


def _error_fields(body: object) -> tuple[str | None, str | None]:
    """(code, message) of an error answer `{"error": {"code", "message"}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, or every exception inside it when it is an exception group, then their causes."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
        return
    yield exc
    if exc.__cause__ is not None:
        yield from _leaves(exc.__cause__)
