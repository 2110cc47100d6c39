"""AsyncActor manifests and the pipeline description that `asya dev` runs.

A pipeline directory holds the handler modules, `actors/*.yaml` (the same AsyncActor manifests
that deploy the actors to a cluster) and `pipeline.yaml` with the route payloads take and,
optionally, the `tools:` a gateway (`asya dev --gateway`) offers over HTTP and MCP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, SchemaError, ValidationError

from .handler_ref import BuildError

API_VERSION = "asya.sh/v1alpha1"


@dataclass(frozen=True)
class ActorManifest:
    """The fields of an AsyncActor that building needs."""

    name: str
    handler: str
    mode: str
    runtime: str
    path: Path
    #: Where the handler's module is, when not the pipeline's root (compiled flow routers).
    source_dir: Path | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A tool of `pipeline.yaml`'s `tools:` list: a named route the gateway runs as a task."""

    name: str
    description: str
    route: list[str]
    #: A duration such as `2m` or `30s` (the task's deadline), or None for no deadline.
    timeout: str | None
    #: The JSON Schema of the tool's arguments (the payload); `{"type": "object"}` by default.
    input_schema: dict[str, Any]

    def gateway_config(self, namespace: str) -> dict[str, Any]:
        """This tool as an entry of the gateway config's `tools:` list."""
        entry: dict[str, Any] = {
            "name": self.name,
            "namespace": namespace,
            "description": self.description,
            "route": list(self.route),
            "inputSchema": self.input_schema,
        }
        if self.timeout is not None:
            entry["timeout"] = self.timeout
        return entry


@dataclass(frozen=True)
class Pipeline:
    """A pipeline directory: where the handlers are, the actors, and the default route."""

    root: Path
    actors_dir: Path
    actors: list[ActorManifest]
    route: list[str]
    #: Every directory of manifests the host loads (the actors, then compiled flow routers).
    manifest_dirs: list[Path] = field(default_factory=list)
    #: Router actors of compiled flows, by flow file.
    flow_routers: dict[str, list[str]] = field(default_factory=dict)
    #: The tools of `pipeline.yaml` (empty when it has no `tools:` list).
    tools: list[ToolSpec] = field(default_factory=list)

    def actor(self, name: str) -> ActorManifest:
        for actor in self.actors:
            if actor.name == name:
                return actor
        known = ", ".join(a.name for a in self.actors)
        raise BuildError(f"no actor named {name!r} in {self.actors_dir} (known: {known})")


@cache
def actor_schema() -> dict[str, Any]:
    """The AsyncActor JSON Schema (generated from the Rust spec crate, shipped with the SDK)."""
    text = resources.files("asya").joinpath("schema/asyncactor.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(actor_schema())


def _field(path: Iterable[str | int]) -> str:
    """`spec.resiliency.policies.default.maxAttempts`, `spec.tolerations[0].key`; keys that are
    not plain names are quoted (`spec.resources.limits["nvidia.com/gpu"]`)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "(the document)"


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _message(error: ValidationError) -> str | None:
    schema = error.schema
    message = schema.get("x-asya-message") if isinstance(schema, dict) else None
    return message if isinstance(message, str) else None


def _types(value: object) -> list[str]:
    return [str(t) for t in value] if isinstance(value, list) else [str(value)]


def _rank(error: ValidationError) -> tuple[int, bool, bool, bool]:
    """Which anyOf/oneOf branch explains a failure best (smallest first), as
    `jsonschema.exceptions.best_match` ranks them: the deepest error, then one of a real keyword
    rather than another anyOf/oneOf, then one whose `type` the value has; then one carrying
    `x-asya-message`."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    types = _types(schema["type"]) if "type" in schema else []
    matches = any(_validator().is_type(error.instance, t) for t in types)
    return (
        -len(error.path),
        error.validator not in ("anyOf", "oneOf"),
        not matches,
        _message(error) is None,
    )


def _rule(chain: list[ValidationError]) -> str:
    """The outermost `x-asya-message` of the failing nodes, else jsonschema's own message (one
    naming every type allowed when each branch of a union failed on its type)."""
    for error in chain:
        message = _message(error)
        if message is not None:
            return message
    leaf = chain[-1]
    siblings = chain[-2].context if len(chain) > 1 else []
    if siblings and all(e.validator == "type" and e.path == leaf.path for e in siblings):
        types = dict.fromkeys(t for e in siblings for t in _types(e.validator_value))
        return f"{leaf.instance!r} is not of type " + ", ".join(map(repr, types))
    return leaf.message


def _problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, rule) for each schema violation of `doc`, sorted by field."""
    problems: list[tuple[str, str]] = []
    for top in _validator().iter_errors(doc):
        chain = [top]  # down through anyOf/oneOf to the branch that explains the failure best
        while chain[-1].context:
            chain.append(min(chain[-1].context, key=_rank))
        leaf = chain[-1]
        path, instance, schema = list(leaf.absolute_path), leaf.instance, leaf.schema
        if leaf.validator == "required" and isinstance(instance, dict):
            missing = [k for k in leaf.validator_value if k not in instance]
            named = [k for k in missing if leaf.message.startswith(repr(k))]
            problems += [(_field([*path, key]), "is required") for key in named[:1] or missing[:1]]
        elif (
            leaf.validator in ("additionalProperties", "unevaluatedProperties")
            and leaf.validator_value is False
            and isinstance(instance, dict)
            and isinstance(schema, dict)
        ):
            known = schema.get("properties") or {}
            patterns = list(schema.get("patternProperties") or {})
            problems += [
                (_field([*path, key]), "is not a known field")
                for key in instance
                if key not in known and not any(re.search(p, key) for p in patterns)
            ]
        else:
            problems.append((_field(path), _rule(chain)))
    return sorted(set(problems))


def resolve_workload(spec: dict[str, Any]) -> dict[str, Any]:
    """The fields `asya dev` reads from Asya's `spec.workload` form (its `asya-runtime`
    container's image and `ASYA_HANDLER` / `ASYA_HANDLER_MODE` env), which makes the actor
    `runtime: python`. The host resolves (and checks) the whole form the same way
    (`asya_spec::workload::resolve`); a spec without it comes back unchanged."""
    workload = spec.get("workload")
    if not isinstance(workload, dict):
        return spec
    out = {k: v for k, v in spec.items() if k != "workload"}
    containers = (workload.get("template") or {}).get("spec", {}).get("containers") or []
    for container in containers:
        if not isinstance(container, dict) or container.get("name") != "asya-runtime":
            continue
        if container.get("image"):
            out.setdefault("image", container["image"])
        for var in container.get("env") or []:
            if var.get("name") == "ASYA_HANDLER":
                out.setdefault("handler", var.get("value", ""))
            elif var.get("name") == "ASYA_HANDLER_MODE":
                out.setdefault("mode", var.get("value", ""))
            else:
                out.setdefault("env", {}).setdefault(var.get("name"), var.get("value", ""))
    out.setdefault("runtime", "python")
    return out


def effective_runtime(spec: dict[str, Any]) -> str:
    """`spec.runtime`, else `python` for an actor naming an image and no component (Asya's
    `image` + `handler`), else `wasm`: the host's `effective_runtime`."""
    runtime = spec.get("runtime")
    if isinstance(runtime, str):
        return runtime
    return "python" if spec.get("image") and not spec.get("component") else "wasm"


def load_actors(directory: Path) -> list[ActorManifest]:
    """Every AsyncActor in the YAML files under `directory`, sorted by file name.

    Each AsyncActor is validated against the AsyncActor JSON Schema; a `BuildError` lists every
    problem found, one per line: `FILE: actor 'NAME': FIELD: RULE`.
    """
    actors: list[ActorManifest] = []
    errors: list[str] = []
    files = sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")])
    for path in files:
        if path.name == "pipeline.yaml":
            continue
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise BuildError(f"{path}: not valid YAML: {exc}") from None
        for index, doc in enumerate(documents):
            if not isinstance(doc, dict) or doc.get("kind") != "AsyncActor":
                continue
            metadata = doc.get("metadata")
            name = metadata.get("name") if isinstance(metadata, dict) else None
            who = f"actor {name!r}" if isinstance(name, str) else f"AsyncActor #{index + 1}"
            problems = _problems(doc)
            errors += [f"{path}: {who}: {field}: {rule}" for field, rule in problems]
            if problems:
                continue
            if not isinstance(name, str):  # the schema requires it; for the type checker
                errors.append(f"{path}: {who}: metadata.name: is required")
                continue
            spec = resolve_workload(doc.get("spec") or {})
            handler = spec.get("handler")
            if not handler:
                errors.append(f"{path}: {who}: spec.handler: is required to build the actor")
                continue
            actors.append(
                ActorManifest(
                    name=name,
                    handler=handler,
                    mode=spec.get("mode") or "payload",
                    runtime=effective_runtime(spec),
                    path=path,
                )
            )
    if errors:
        raise BuildError("\n".join(errors))
    names = [a.name for a in actors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BuildError(f"actors declared more than once under {directory}: {duplicates}")
    return actors


def load_pipeline(root: Path) -> Pipeline:
    """Reads a pipeline directory (see the module docstring)."""
    root = root.resolve()
    if not root.is_dir():
        raise BuildError(f"{root} is not a directory")
    actors_dir = root / "actors" if (root / "actors").is_dir() else root
    actors = load_actors(actors_dir)
    if not actors:
        raise BuildError(f"no AsyncActor manifests found in {actors_dir}")
    route: list[str] = []
    flows: list[str] = []
    spec: dict[str, Any] = {}
    spec_file = root / "pipeline.yaml"
    if spec_file.is_file():
        try:
            loaded = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise BuildError(f"{spec_file}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise BuildError(f"{spec_file}: must be a mapping (route:, flows:, tools:)")
        spec = loaded
        route = [str(step) for step in spec.get("route") or []]
        flows = [str(f) for f in spec.get("flows") or []]
    manifest_dirs = [actors_dir]
    flow_routers: dict[str, list[str]] = {}
    if flows:
        from .flow import FlowCompileError, compile_file

        known = {a.name: a.handler for a in actors}
        for flow_file in flows:
            source = root / flow_file
            if not source.is_file():
                raise BuildError(f"{spec_file}: flow file {flow_file} does not exist")
            out = root / ".asya" / "flows" / source.stem
            try:
                compiled = compile_file(source, out, overwrite=True, known_actors=known)
            except (FlowCompileError, LookupError) as exc:
                raise BuildError(str(exc)) from None
            routers = load_actors(out / "actors")
            actors += [replace(r, source_dir=out) for r in routers]
            manifest_dirs.append(out / "actors")
            flow_routers[flow_file] = compiled.routers
        if not route:
            # The first flow's entry router: `start-<flow>`.
            route = [next(iter(flow_routers.values()))[0]]
    names = [a.name for a in actors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BuildError(f"flow routers clash with actors of the same name: {duplicates}")
    tools = load_tools(spec.get("tools"), route, spec_file)
    return Pipeline(
        root=root,
        actors_dir=actors_dir,
        actors=actors,
        route=route,
        manifest_dirs=manifest_dirs,
        flow_routers=flow_routers,
        tools=tools,
    )


#: A tool name as MCP allows it: 1-128 letters, digits, '_', '-' and '.'.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: A duration: one or more `<number><unit>` parts (`2m`, `1h30m`, `500ms`).
_DURATION = re.compile(r"(\s*[0-9]+\s*(ms|s|m|h|d)\s*)+")
_TOOL_KEYS = ("name", "description", "route", "timeout", "inputSchema")


def load_tools(raw: object, default_route: list[str], source: Path) -> list[ToolSpec]:
    """The `tools:` list of `pipeline.yaml` (`raw`; None when absent), validated.

    Each entry has a `name`, and optionally a `description`, a `route` (default: the pipeline's
    `default_route`), a `timeout` (`2m`, `30s`; a number is seconds) and an `inputSchema` (a JSON
    Schema of type object; default `{"type": "object"}`). A `BuildError` lists every problem,
    one per line: `FILE: tools[I]: FIELD: RULE`.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BuildError(f"{source}: tools: must be a list of tools")
    tools: list[ToolSpec] = []
    errors: list[str] = []
    for index, entry in enumerate(raw):
        where = f"{source}: tools[{index}]"
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be a mapping with a name")
            continue
        problems = _tool_problems(entry, default_route)
        errors += [f"{where}: {problem}" for problem in problems]
        if problems:
            continue
        timeout = entry.get("timeout")
        tools.append(
            ToolSpec(
                name=entry["name"],
                description=entry.get("description") or "",
                route=[str(step) for step in entry.get("route") or default_route],
                timeout=f"{timeout}s" if isinstance(timeout, int) else timeout,
                input_schema=entry.get("inputSchema") or {"type": "object"},
            )
        )
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        errors.append(f"{source}: tools: names declared more than once: {duplicates}")
    if errors:
        raise BuildError("\n".join(errors))
    return tools


def _tool_problems(entry: dict[str, Any], default_route: list[str]) -> list[str]:
    """`FIELD: RULE` for each problem of one `tools:` entry."""
    problems: list[str] = []
    for key in entry:
        if key == "namespace":
            problems.append("namespace: is not set in pipeline.yaml (the gateway decides it)")
        elif key not in _TOOL_KEYS:
            problems.append(f"{key}: is not a known field (known: {', '.join(_TOOL_KEYS)})")
    name = entry.get("name")
    if name is None:
        problems.append("name: is required")
    elif not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        problems.append(f"name: {name!r} must be 1-128 letters, digits, '_', '-' or '.'")
    description = entry.get("description")
    if description is not None and not isinstance(description, str):
        problems.append("description: must be a string")
    route = entry.get("route")
    if route is None:
        if not default_route:
            problems.append("route: is required (pipeline.yaml has no route to default to)")
    elif not (isinstance(route, list) and route and all(isinstance(s, str) and s for s in route)):
        problems.append("route: must be a non-empty list of actor names")
    timeout = entry.get("timeout")
    if timeout is not None and not (
        (isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0)
        or (isinstance(timeout, str) and _DURATION.fullmatch(timeout))
    ):
        problems.append(f"timeout: {timeout!r} must be a duration such as 30s, 2m or 1h")
    schema = entry.get("inputSchema")
    if schema is not None:
        problems += [f"inputSchema: {p}" for p in _input_schema_problems(schema)]
    return problems


def _input_schema_problems(schema: object) -> list[str]:
    if not isinstance(schema, dict):
        return ["must be a JSON Schema (a mapping)"]
    if schema.get("type") != "object":
        return ["type: must be object (a tool's arguments are a JSON object)"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _field(exc.path) if exc.path else "(the schema)"
        return [f"not a valid JSON Schema: {where}: {exc.message}"]
    return []
