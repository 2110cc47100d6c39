"""`asya dev PIPELINE_DIR --gateway`: the config and API key of a local gateway that offers a
pipeline's tools over HTTP and MCP (`asya-gateway dev`, every actor in one process).

The config has one tenant, `default`, with one API key: a fresh random key each start, kept in
the config only as its SHA-256 and handed to the CLI through `~/.asya/gateway-token` (mode
0600). The tools are `pipeline.yaml`'s `tools:` list, else one tool named after the pipeline
directory that runs the pipeline's route.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from .gateway_client import token_file
from .handler_ref import BuildError
from .manifest import Pipeline, ToolSpec

#: The tenant (namespace) of a local gateway.
NAMESPACE = "default"
#: The host's built-in steps a route may name besides the pipeline's actors.
BUILTIN_STEPS = ("x-sink", "x-sump", "x-fanin", "x-pause")


def new_api_key() -> str:
    """A fresh random API key."""
    return secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    """The SHA-256 (hex) of an API key: what the gateway config keeps."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def pipeline_tools(pipeline: Pipeline, route: list[str] | None = None) -> list[ToolSpec]:
    """The pipeline's tools, else one tool named after its directory running `route` (default:
    the pipeline's route). Every step of every tool must be an actor of the pipeline or a
    built-in step."""
    tools = list(pipeline.tools)
    if not tools:
        steps = route or pipeline.route
        if not steps:
            raise BuildError(
                f"no route: add `route: [...]` or `tools: [...]` to {pipeline.root}/pipeline.yaml"
                " or pass --route"
            )
        tools = [
            ToolSpec(
                name=pipeline.root.name,
                description=f"Runs the {pipeline.root.name} pipeline: {' → '.join(steps)}.",
                route=steps,
                timeout=None,
                input_schema={"type": "object"},
            )
        ]
    for tool in tools:
        for step in tool.route:
            if step not in BUILTIN_STEPS:
                pipeline.actor(step)
    return tools


def gateway_config(tools: list[ToolSpec], api_key: str) -> dict[str, Any]:
    """The gateway config: tenant `default` with `api_key` (as its SHA-256) and `tools`."""
    return {
        "tenants": [
            {"namespace": NAMESPACE, "apiKeys": [{"name": "dev", "sha256": key_digest(api_key)}]}
        ],
        "tools": [tool.gateway_config(NAMESPACE) for tool in tools],
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Writes `config` as YAML to `path` (creating its directory); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Written by `asya dev --gateway` at each start; edits are lost.\n"
    text += yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_token(api_key: str, path: Path | None = None) -> Path:
    """Writes `api_key` to `path` (default `~/.asya/gateway-token`), readable by its owner only;
    returns the path."""
    path = path or token_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file keeps its mode through O_CREAT
        out.write(api_key + "\n")
    return path
