"""A tool's arguments from the command line (`asya mcp call TOOL --text="hello" --count=3`),
converted and checked by the tool's `inputSchema`.

Each `--NAME=VALUE` (or `--NAME VALUE`) becomes the argument NAME. A property the schema types
as only `string` keeps VALUE as it is; any other type (integer, number, boolean, object, array,
null, or a union) is parsed as JSON, and a union that allows `string` keeps VALUE as a string
when it is not JSON of an allowed type. A property of no declared type takes VALUE as JSON when
it parses, else as a string. A boolean may be given as a bare `--NAME` (true). `--json '{...}'`
gives arguments as one JSON object; `--NAME` options given with it override its keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


class ToolArgumentError(ValueError):
    """Command-line arguments that do not fit the tool's inputSchema; the message says why."""


def parse_tool_arguments(
    schema: Mapping[str, Any], args: Sequence[str], json_text: str | None = None
) -> dict[str, Any]:
    """The arguments object of a tool call from `--NAME=VALUE` options `args` and an optional
    JSON object `json_text`, checked against `schema` (the tool's inputSchema).

    Raises `ToolArgumentError` for an option of no known argument (unless the schema allows
    additional properties, as it does by default), a missing required argument, a value of the
    wrong type, or any other violation of the schema.
    """
    properties = _properties(schema)
    additional = schema.get("additionalProperties", True)
    arguments: dict[str, Any] = {}
    if json_text is not None:
        arguments.update(_json_object(json_text))
        for key in arguments:
            _check_known(key, properties, additional, f"--json key {key!r}")
    given: set[str] = set()
    for name, raw in _options(args, properties):
        key = _resolve(name, properties, additional)
        if key in given:
            raise ToolArgumentError(f"--{name} is given twice")
        given.add(key)
        arguments[key] = (
            raw if isinstance(raw, bool) else _convert(name, raw, _schema_of(key, schema))
        )
    required = [str(r) for r in schema.get("required") or []]
    missing = [r for r in required if r not in arguments]
    if missing:
        raise ToolArgumentError(
            "missing required argument"
            + ("s " if len(missing) > 1 else " ")
            + ", ".join(f"--{m}" for m in missing)
        )
    _validate(schema, arguments)
    return arguments


def describe_arguments(schema: Mapping[str, Any]) -> list[str]:
    """One line per argument of `schema`: `--NAME TYPE (required): description`."""
    required = set(schema.get("required") or [])
    lines = []
    for name, prop in _properties(schema).items():
        types = "|".join(_types(prop)) or "any"
        line = f"--{name} {types}" + (" (required)" if name in required else "")
        description = prop.get("description")
        if isinstance(description, str) and description:
            line += f": {description}"
        lines.append(line)
    if schema.get("additionalProperties", True) is not False and not lines:
        lines.append("any --NAME=VALUE")
    return lines


def _properties(schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {str(k): v if isinstance(v, dict) else {} for k, v in properties.items()}


def _types(prop: Mapping[str, Any]) -> list[str]:
    declared = prop.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [str(t) for t in declared]
    return []


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolArgumentError(f"--json is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ToolArgumentError("--json must be a JSON object of arguments")
    return value


def _options(args: Sequence[str], properties: Mapping[str, Any]) -> list[tuple[str, str | bool]]:
    """(name, raw value) of each `--NAME=VALUE`, `--NAME VALUE` or bare boolean `--NAME`."""
    options: list[tuple[str, str | bool]] = []
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if not token.startswith("--") or len(token) == 2 or token.startswith("---"):
            raise ToolArgumentError(
                f"unexpected argument {token!r}: give tool arguments as --NAME=VALUE"
            )
        name, sep, value = token[2:].partition("=")
        if not name:
            raise ToolArgumentError(f"unexpected argument {token!r}: the option has no name")
        if sep:
            options.append((name, value))
        elif index < len(args) and not args[index].startswith("--"):
            options.append((name, args[index]))
            index += 1
        elif _types(properties.get(name) or properties.get(name.replace("-", "_")) or {}) == [
            "boolean"
        ]:
            options.append((name, True))
        else:
            raise ToolArgumentError(f"--{name} needs a value: --{name}=VALUE")
    return options


def _resolve(name: str, properties: Mapping[str, Any], additional: object) -> str:
    """The argument an option names: the property `name`, else `name` with `-` as `_`."""
    if name in properties:
        return name
    underscored = name.replace("-", "_")
    if underscored in properties:
        return underscored
    _check_known(name, properties, additional, f"--{name}")
    return name


def _check_known(key: str, properties: Mapping[str, Any], additional: object, what: str) -> None:
    if key in properties or additional is not False:
        return
    known = ", ".join(f"--{p}" for p in properties) or "none"
    raise ToolArgumentError(f"{what} is not an argument of this tool (known: {known})")


def _schema_of(key: str, schema: Mapping[str, Any]) -> Mapping[str, Any]:
    properties = _properties(schema)
    if key in properties:
        return properties[key]
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, dict) else {}


def _convert(name: str, raw: str, prop: Mapping[str, Any]) -> Any:
    """VALUE converted by the property's declared type(s) (see the module docstring)."""
    types = _types(prop)
    if types == ["string"]:
        return raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        if not types or "string" in types:
            return raw
        raise ToolArgumentError(f"--{name} must be {_a(types)} (as JSON), got {raw!r}") from None
    if not types or any(_is_type(value, t) for t in types):
        return value
    if "string" in types:
        return raw
    raise ToolArgumentError(f"--{name} must be {_a(types)}, got {raw!r}")


def _is_type(value: object, type_name: str) -> bool:
    if type_name in ("integer", "number") and isinstance(value, bool):
        return False
    if type_name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(type_name, (object,)))


def _a(types: list[str]) -> str:
    words = [("an " if t[0] in "aeiou" else "a ") + t for t in types]
    return " or ".join(words)


def _validate(schema: Mapping[str, Any], arguments: dict[str, Any]) -> None:
    """Every other rule of the schema (enum, minimum, pattern, nested objects...)."""
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError:
        return  # the gateway checks the arguments against its own copy of the schema anyway
    validator = Draft202012Validator(dict(schema))
    errors = sorted(
        validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        lines = []
        for error in errors:
            path = list(error.absolute_path)
            where = f"--{path[0]}" + "".join(f"[{p!r}]" for p in path[1:]) if path else "arguments"
            lines.append(f"{where}: {error.message}")
        raise ToolArgumentError("; ".join(lines))
