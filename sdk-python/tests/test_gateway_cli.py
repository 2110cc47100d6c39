"""The gateway's CLI side without a gateway: tool arguments from `--NAME=VALUE` options by the
tool's inputSchema, the settings (URL, API key), progress messages, pipeline.yaml's `tools:`
and the config `asya dev --gateway` writes. (The end-to-end runs against a real gateway are in
tests/gateway.)"""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from asya.gateway_client import (
    GatewayError,
    GatewaySettings,
    normalize_url,
    parse_progress_message,
)
from asya.gateway_dev import gateway_config, pipeline_tools, write_token
from asya.handler_ref import BuildError
from asya.manifest import load_pipeline
from asya.tool_args import ToolArgumentError, describe_arguments, parse_tool_arguments

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "The text"},
        "count": {"type": "integer", "minimum": 1},
        "ratio": {"type": "number"},
        "loud": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "options": {"type": "object"},
        "max_words": {"type": "integer"},
        "note": {"type": ["string", "null"]},
        "anything": {},
    },
    "required": ["text"],
    "additionalProperties": False,
}


def parse(*args: str, schema: dict[str, Any] | None = None, json_text: str | None = None):
    return parse_tool_arguments(SCHEMA if schema is None else schema, list(args), json_text)


def test_values_are_converted_by_the_property_type() -> None:
    assert parse(
        "--text=42",
        "--count=3",
        "--ratio=0.5",
        "--loud=true",
        '--tags=["a", "b"]',
        '--options={"x": 1}',
        "--note=null",
        "--anything=[1]",
    ) == {
        "text": "42",  # a string property keeps its value as given, even when it looks like JSON
        "count": 3,
        "ratio": 0.5,
        "loud": True,
        "tags": ["a", "b"],
        "options": {"x": 1},
        "note": None,
        "anything": [1],
    }


def test_value_forms_bare_booleans_dashes_and_untyped_strings() -> None:
    assert parse("--text", "hello world", "--loud", "--max-words", "7", "--anything=hi") == {
        "text": "hello world",
        "loud": True,
        "max_words": 7,
        "anything": "hi",  # no declared type and not JSON: a string
    }
    assert parse("--text=", "--note=plain words") == {"text": "", "note": "plain words"}


def test_json_gives_every_argument_and_options_override_its_keys() -> None:
    assert parse(json_text='{"text": "a", "count": 2}') == {"text": "a", "count": 2}
    assert parse("--count=5", json_text='{"text": "a", "count": 2}') == {"text": "a", "count": 5}


@pytest.mark.parametrize(
    ("args", "json_text", "message"),
    [
        (["--text=a", "--colour=red"], None, "--colour is not an argument of this tool (known: "),
        (["--count=3"], None, "missing required argument --text"),
        (["--text=a", "--count=three"], None, "--count must be an integer (as JSON), got 'three'"),
        (["--text=a", "--count=1.5"], None, "--count must be an integer, got '1.5'"),
        (["--text=a", "--loud=yes"], None, "--loud must be a boolean (as JSON), got 'yes'"),
        (["--text=a", "--tags={}"], None, "--tags must be an array, got '{}'"),
        (["--text=a", "--count=0"], None, "--count: 0 is less than the minimum of 1"),
        (["--text=a", "--text=b"], None, "--text is given twice"),
        (["--text"], None, "--text needs a value: --text=VALUE"),
        (["hello"], None, "unexpected argument 'hello'"),
        (["--=x"], None, "the option has no name"),
        ([], "[1]", "--json must be a JSON object"),
        ([], "{nope", "--json is not JSON"),
        ([], '{"text": "a", "colour": 1}', "--json key 'colour' is not an argument"),
    ],
)
def test_bad_arguments_are_explained(args: list[str], json_text: str | None, message: str) -> None:
    with pytest.raises(ToolArgumentError) as info:
        parse(*args, json_text=json_text)
    assert message in str(info.value)


def test_unknown_arguments_pass_when_the_schema_allows_additional_properties() -> None:
    open_schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    assert parse("--text=a", "--extra=3", "--word=hi", schema=open_schema) == {
        "text": "a",
        "extra": 3,
        "word": "hi",
    }
    typed_extra = {"type": "object", "additionalProperties": {"type": "string"}}
    assert parse("--n=3", schema=typed_extra) == {"n": "3"}
    assert parse(schema={"type": "object"}) == {}


def test_describe_arguments_lists_each_property() -> None:
    lines = describe_arguments(SCHEMA)
    assert lines[0] == "--text string (required): The text"
    assert "--note string|null" in lines
    assert describe_arguments({"type": "object"}) == ["any --NAME=VALUE"]


def test_settings_come_from_options_then_environment_then_the_token_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ASYA_CLI_MCP_URL", raising=False)
    monkeypatch.delenv("ASYA_CLI_TOKEN", raising=False)
    with pytest.raises(GatewayError, match="no gateway URL: pass --url or set ASYA_CLI_MCP_URL"):
        GatewaySettings.resolve()
    monkeypatch.setenv("ASYA_CLI_MCP_URL", "http://127.0.0.1:8089")
    with pytest.raises(GatewayError, match="no API key"):
        GatewaySettings.resolve()
    write_token("from-file")
    settings = GatewaySettings.resolve()
    assert (settings.base_url, settings.token) == ("http://127.0.0.1:8089/", "from-file")
    assert settings.mcp_url == "http://127.0.0.1:8089/mcp"
    assert settings.api_url("v1/tasks") == "http://127.0.0.1:8089/v1/tasks"
    monkeypatch.setenv("ASYA_CLI_TOKEN", "from-env")
    assert GatewaySettings.resolve().token == "from-env"
    assert GatewaySettings.resolve("http://h:1/", "given").token == "given"
    assert GatewaySettings.resolve().headers == {"Authorization": "Bearer from-env"}


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://127.0.0.1:8089/", "http://127.0.0.1:8089/"),
        ("http://127.0.0.1:8089", "http://127.0.0.1:8089/"),
        ("http://127.0.0.1:8089/mcp", "http://127.0.0.1:8089/"),
        ("https://gw.example.com/asya/mcp/", "https://gw.example.com/asya/"),
    ],
)
def test_urls_are_normalized_to_the_gateway_root(url: str, base: str) -> None:
    assert normalize_url(url) == base


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(GatewayError, match="is not an http"):
        normalize_url("127.0.0.1:8089")


def test_progress_messages_name_the_task_the_event_and_the_actor() -> None:
    assert parse_progress_message("abc-1: created") == ("abc-1", "created", None)
    assert parse_progress_message("abc-1: hop classify") == ("abc-1", "hop", "classify")
    assert parse_progress_message("no task here") == (None, None, None)
    assert parse_progress_message(None) == (None, None, None)


def test_the_token_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / ".asya" / "gateway-token"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)
    write_token("secret", path)
    assert path.read_text() == "secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_example_pipeline_offers_the_tutorial_tool(repo: Path) -> None:
    pipeline = load_pipeline(repo / "examples" / "text-pipeline")
    (tool,) = pipeline_tools(pipeline)
    assert tool.name == "text-processor"
    assert tool.route == pipeline.route
    assert tool.timeout == "2m"
    assert tool.input_schema["required"] == ["text"]
    config = gateway_config([tool], "key-a")
    assert config["tenants"] == [
        {
            "namespace": "default",
            "apiKeys": [{"name": "dev", "sha256": hashlib.sha256(b"key-a").hexdigest()}],
        }
    ]
    assert config["tools"][0]["namespace"] == "default"
    assert "key-a" not in yaml.safe_dump(config)


def pipeline_dir(tmp_path: Path, pipeline_yaml: str) -> Path:
    root = tmp_path / "my-pipe"
    (root / "actors").mkdir(parents=True)
    for name in ("first", "second"):
        (root / "actors" / f"{name}.yaml").write_text(
            "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\n"
            f"metadata: {{name: {name}}}\nspec: {{handler: mod.{name}}}\n"
        )
    (root / "pipeline.yaml").write_text(pipeline_yaml)
    return root


def test_without_tools_the_pipeline_is_one_tool_named_after_its_directory(
    tmp_path: Path,
) -> None:
    pipeline = load_pipeline(pipeline_dir(tmp_path, "route: [first, second]\n"))
    (tool,) = pipeline_tools(pipeline)
    assert (tool.name, tool.route, tool.input_schema) == (
        "my-pipe",
        ["first", "second"],
        {"type": "object"},
    )
    assert pipeline_tools(pipeline, ["second"])[0].route == ["second"]
    with pytest.raises(BuildError, match="no actor named 'third'"):
        pipeline_tools(pipeline, ["first", "third"])


def test_tools_default_to_the_pipeline_route_and_may_pause(tmp_path: Path) -> None:
    pipeline = load_pipeline(
        pipeline_dir(
            tmp_path,
            "route: [first, second]\n"
            "tools:\n"
            "  - {name: all}\n"
            "  - {name: reviewed, route: [first, x-pause, second], timeout: 90}\n",
        )
    )
    tools = pipeline_tools(pipeline)
    assert [(t.name, t.route, t.timeout) for t in tools] == [
        ("all", ["first", "second"], None),
        ("reviewed", ["first", "x-pause", "second"], "90s"),
    ]


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ("tools: {name: a}", "tools: must be a list of tools"),
        ("tools: [a]", "tools[0]: must be a mapping with a name"),
        ("tools: [{description: x}]", "tools[0]: name: is required"),
        ("tools: [{name: 'a b'}]", "tools[0]: name: 'a b' must be 1-128 letters"),
        ("tools: [{name: a, route: []}]", "tools[0]: route: must be a non-empty list"),
        ("tools: [{name: a, timeout: soon}]", "tools[0]: timeout: 'soon' must be a duration"),
        ("tools: [{name: a, namespace: x}]", "tools[0]: namespace: is not set in pipeline.yaml"),
        ("tools: [{name: a, input: {}}]", "tools[0]: input: is not a known field"),
        ("tools: [{name: a, inputSchema: {type: string}}]", "inputSchema: type: must be object"),
        (
            "tools: [{name: a, inputSchema: {type: object, properties: 3}}]",
            "inputSchema: not a valid JSON Schema: properties: 3 is not of type 'object'",
        ),
        ("tools: [{name: a}, {name: a}]", "tools: names declared more than once: ['a']"),
    ],
)
def test_bad_tools_are_explained(tmp_path: Path, tools: str, message: str) -> None:
    root = pipeline_dir(tmp_path, f"route: [first]\n{tools}\n")
    with pytest.raises(BuildError) as info:
        load_pipeline(root)
    assert f"{root / 'pipeline.yaml'}: " in str(info.value)
    assert message in str(info.value)


def test_a_tool_needs_a_route_when_the_pipeline_has_none(tmp_path: Path) -> None:
    root = pipeline_dir(tmp_path, "tools: [{name: a}]\n")
    with pytest.raises(BuildError, match=r"tools\[0\]: route: is required"):
        load_pipeline(root)


def asya(*args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "asya"
    return subprocess.run(
        [str(cli), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_dev_gateway_and_payloads_exclude_each_other(repo: Path) -> None:
    example = str(repo / "examples" / "text-pipeline")
    proc = asya("dev", example, "--gateway", "--payload", "{}")
    assert proc.returncode == 2
    assert "--gateway serves the pipeline: give no --payload or --input" in proc.stderr
    proc = asya("dev", example)
    assert proc.returncode == 2
    assert "give exactly one of --payload JSON, --input FILE or --gateway" in proc.stderr
    proc = asya("dev", example, "--gateway", "--listen", "8089")
    assert proc.returncode == 2
    assert "give HOST:PORT" in proc.stderr
    proc = asya("dev", example, "--gateway", "--route", "preprocess")
    assert proc.returncode == 1
    assert "pipeline.yaml has `tools:`" in proc.stderr


def test_gateway_commands_fail_clearly_without_a_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ASYA_CLI_MCP_URL", raising=False)
    proc = asya("mcp", "list")
    assert proc.returncode == 1
    assert "error: no gateway URL" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = asya("mcp", "list", "--url", "http://127.0.0.1:9/", "--token", "x")
    assert proc.returncode == 1
    assert "cannot reach the gateway at http://127.0.0.1:9/" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = asya("tasks", "resume", "abc", "--input", "[1]", "--url", "http://h/", "--token", "x")
    assert proc.returncode == 2
    assert "must be a JSON object" in proc.stderr
