"""The `asya` command line."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from . import __version__
from .build import MODES, BuildResult, build
from .flow.codegen import DEFAULT_LABEL_WIDTH
from .flow.compiler import FlowProgram
from .gateway_client import (
    TOKEN_ENV,
    URL_ENV,
    GatewayClient,
    GatewayError,
    GatewaySettings,
    ProgressUpdate,
    ToolOutcome,
)
from .gateway_dev import gateway_config, new_api_key, pipeline_tools, write_config, write_token
from .handler_ref import BuildError
from .host import find_gateway_binary, find_host_binary
from .manifest import ActorManifest, Pipeline, ToolSpec, load_pipeline
from .oci import RegistryError, push
from .tool_args import ToolArgumentError, describe_arguments, parse_tool_arguments

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _report(label: str, result: BuildResult) -> None:
    how = "cached" if result.cached else f"built in {result.seconds:.1f}s"
    try:
        shown = result.output.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = result.output
    console.print(
        f"[green]✓[/] {label}: {shown} [dim]({how}, {result.digest[:15]}…)[/]", soft_wrap=True
    )


@click.group()
@click.version_option(__version__, prog_name="asya")
def main() -> None:
    """asya: plain Python handlers as sandboxed WebAssembly actors."""


@main.command("build")
@click.argument("handler")
@click.option(
    "--source",
    "source_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory holding the handler's module (bundled into the component).",
)
@click.option("--mode", type=click.Choice(MODES), default="payload", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output component (default: <module>.wasm).",
)
@click.option("--no-cache", is_flag=True, help="Rebuild even if the inputs are unchanged.")
@click.option(
    "--push",
    "push_to",
    metavar="oci://REGISTRY/REPO:TAG",
    help="Push the component to an OCI registry after building it.",
)
def build_command(
    handler: str,
    source_dir: Path,
    mode: str,
    output: Path | None,
    no_cache: bool,
    push_to: str | None,
) -> None:
    """Build HANDLER (module.func or module.Class.method) into a WebAssembly component."""
    output = output or Path(handler.split(".")[0] + ".wasm")
    try:
        with _progress() as progress:
            task = progress.add_task(f"checking {handler}", total=None)

            def started(what: str) -> None:
                progress.update(task, description=f"{what} (componentize-py, ~5-10 s)")

            result = build(
                handler, source_dir, output, mode, use_cache=not no_cache, on_start=started
            )
    except BuildError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(1)
    _report(handler, result)
    if push_to:
        _push(result.output, push_to, {"sh.asya.source-digest": result.source_key})


def _inspect(component: Path) -> dict[str, object]:
    """Handler, mode, SDK version, imports and exports of a component (via `asya-host`)."""
    proc = subprocess.run(
        [str(find_host_binary()), "inspect", str(component)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BuildError(f"cannot inspect {component}: {proc.stderr.strip()}")
    info: dict[str, object] = json.loads(proc.stdout)
    return info


def _push(component: Path, reference: str, extra: dict[str, str] | None = None) -> None:
    try:
        info = _inspect(component)
        annotations = {
            "sh.asya.handler": str(info["handler"]),
            "sh.asya.mode": str(info["mode"]),
            "sh.asya.sdk-version": str(info["sdk_version"]),
            **(extra or {}),
        }
        with Progress(
            TextColumn("uploading {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(component.name, total=component.stat().st_size)
            ref, digest = push(
                component,
                reference,
                imports=[str(i) for i in info["imports"]],  # type: ignore[attr-defined]
                exports=[str(e) for e in info["exports"]],  # type: ignore[attr-defined]
                annotations=annotations,
                progress=lambda sent, total: progress.update(task, completed=sent, total=total),
            )
    except (BuildError, RegistryError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(1)
    console.print(f"[green]✓[/] pushed {ref}")
    click.echo(digest)


@main.command("push")
@click.argument("component", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("reference", metavar="oci://REGISTRY/REPO:TAG")
def push_command(component: Path, reference: str) -> None:
    """Push COMPONENT to an OCI registry as a CNCF wasm artifact; prints the manifest digest."""
    _push(component, reference)


def _build_actors(
    pipeline_root: Path, actors: list[ActorManifest], out_dir: Path
) -> dict[str, Path]:
    """Builds every WASM actor of a pipeline (two at a time), showing progress."""
    built: dict[str, Path] = {}
    wasm_actors = [a for a in actors if a.runtime == "wasm"]
    # Actors with the same handler, mode and sources (e.g. a flow's routers) share one component.
    groups: dict[tuple[str, str, Path], list[ActorManifest]] = {}
    for actor in wasm_actors:
        key = (actor.handler, actor.mode, actor.source_dir or pipeline_root)
        groups.setdefault(key, []).append(actor)
    with _progress() as progress, ThreadPoolExecutor(max_workers=2) as pool:
        tasks = {
            key: progress.add_task(f"{members[0].name}: checking", total=None)
            for key, members in groups.items()
        }

        def one(
            item: tuple[tuple[str, str, Path], list[ActorManifest]],
        ) -> tuple[list[ActorManifest], BuildResult]:
            key, members = item
            handler, mode, source_dir = key
            label = members[0].name if len(members) == 1 else f"{len(members)} routers"

            def started(what: str) -> None:
                progress.update(tasks[key], description=f"{label}: {what}")

            result = build(
                handler,
                source_dir,
                out_dir / f"{members[0].name}.wasm",
                mode,
                on_start=started,
            )
            progress.remove_task(tasks[key])
            return members, result

        for members, result in pool.map(one, groups.items()):
            names = ", ".join(a.name for a in members)
            if len(members) > 3:
                names = f"{members[0].name} and {len(members) - 1} more routers"
            _report(f"{names} ({members[0].handler})", result)
            for actor in members:
                built[actor.name] = result.output
    return built


@main.command("dev")
@click.argument("pipeline_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--payload", help="One payload, a JSON object.")
@click.option(
    "--input",
    "input_file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="JSON lines of payloads ('-' for stdin); results are written as JSON lines.",
)
@click.option("--route", help="Comma-separated actor names (default: pipeline.yaml's route).")
@click.option("--hops/--no-hops", default=None, help="Show each hop (default: for one payload).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write results here instead of stdout.",
)
@click.option(
    "--window",
    type=int,
    default=64,
    show_default=True,
    help="Payloads in flight at once in a batch.",
)
@click.option(
    "--gateway",
    is_flag=True,
    help="Serve the pipeline's tools over HTTP and MCP (asya-gateway) instead of running "
    "payloads; the CLI's `asya mcp` commands then call them.",
)
@click.option(
    "--listen",
    default="127.0.0.1:8089",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the gateway listens (with --gateway).",
)
def dev_command(
    pipeline_dir: Path,
    payload: str | None,
    input_file: Path | None,
    route: str | None,
    hops: bool | None,
    output: Path | None,
    window: int,
    gateway: bool,
    listen: str,
) -> None:
    """Build every actor of PIPELINE_DIR and run it locally, in one host, with no servers.

    With --gateway, serve the pipeline's tools (pipeline.yaml's `tools:`, else one tool named
    after the directory) over HTTP and MCP at --listen, until interrupted."""
    if gateway:
        if payload is not None or input_file is not None:
            raise click.UsageError("--gateway serves the pipeline: give no --payload or --input")
        if hops is not None or output is not None:
            raise click.UsageError("--hops and --output apply to --payload/--input, not --gateway")
        if not _LISTEN.fullmatch(listen):
            raise click.UsageError(f"--listen {listen!r}: give HOST:PORT, e.g. 127.0.0.1:8089")
    elif (payload is None) == (input_file is None):
        raise click.UsageError("give exactly one of --payload JSON, --input FILE or --gateway")
    try:
        pipeline = load_pipeline(pipeline_dir)
        steps = [s.strip() for s in route.split(",")] if route else pipeline.route
        if gateway:
            if route and pipeline.tools:
                raise BuildError(
                    "--route sets the route of the default tool, but "
                    f"{pipeline.root}/pipeline.yaml has `tools:` (set each tool's route there)"
                )
            tools = pipeline_tools(pipeline, steps)
        elif not steps:
            raise BuildError(
                f"no route: add `route: [...]` to {pipeline.root}/pipeline.yaml or pass --route"
            )
        else:
            for step in steps:
                pipeline.actor(step)
        components = _build_actors(
            pipeline.root, pipeline.actors, pipeline.root / ".asya" / "build"
        )
        host = find_gateway_binary() if gateway else find_host_binary()
    except BuildError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(1)
    if gateway:
        _exec_gateway(host, listen, pipeline, components, tools)
    cmd = [str(host), "dev", *_actor_args(pipeline, components)]
    cmd += ["--route", ",".join(steps), "--window", str(window)]
    if payload is not None:
        cmd += ["--payload", payload]
    else:
        cmd += ["--input", str(input_file)]
    if hops is True:
        cmd.append("--hops")
    elif hops is False:
        cmd.append("--no-hops")
    if output is not None:
        cmd += ["--output", str(output)]
    sys.exit(subprocess.call(cmd))


_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):[0-9]{1,5}")


def _actor_args(pipeline: Pipeline, components: dict[str, Path]) -> list[str]:
    """The manifest and actor options `asya-host dev` and `asya-gateway dev` share."""
    args: list[str] = []
    for directory in pipeline.manifest_dirs:
        args += ["--manifests", str(directory)]
    for name, path in components.items():
        args += ["--component", f"{name}={path}"]
    for actor in pipeline.actors:
        if actor.runtime == "python":
            args += ["--python-actor", f"{actor.name}={pipeline.root}"]
    return [*args, "--python", sys.executable]


def _exec_gateway(
    gateway: Path,
    listen: str,
    pipeline: Pipeline,
    components: dict[str, Path],
    tools: list[ToolSpec],
) -> NoReturn:
    """Writes the gateway config and a fresh API key, then becomes `asya-gateway dev`."""
    api_key = new_api_key()
    config = write_config(pipeline.root / ".asya" / "gateway.yaml", gateway_config(tools, api_key))
    token = write_token(api_key)
    cmd = [str(gateway), "dev", "--listen", listen, "--config", str(config)]
    cmd += _actor_args(pipeline, components)
    names = ", ".join(t.name for t in tools)
    console.print(
        f"[green]✓[/] gateway config {escape(str(config))} (tools: {escape(names)}); "
        f"API key in {escape(str(token))}",
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        escape(f"[.] Point the CLI at it: export {URL_ENV}=http://{listen}/"), highlight=False
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


@main.command("send")
@click.option(
    "--nats",
    "nats_url",
    envvar="ASYA_NATS_URL",
    default="nats://127.0.0.1:4222",
    show_default=True,
    help="NATS server URL.",
)
@click.option("--namespace", default="default", show_default=True)
@click.option("--route", required=True, help="Comma-separated actor names.")
@click.option("--payload", required=True, help="A JSON object.")
@click.option("--wait", is_flag=True, help="Wait for the message to end; print the envelope.")
@click.option("--timeout", type=int, default=60, show_default=True, help="Seconds to wait.")
def send_command(
    nats_url: str, namespace: str, route: str, payload: str, wait: bool, timeout: int
) -> None:
    """Publish PAYLOAD into ROUTE on NATS JetStream (prints the id, or the final envelope)."""
    try:
        host = find_host_binary()
    except BuildError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(1)
    cmd = [
        str(host),
        "send",
        "--nats",
        nats_url,
        "--namespace",
        namespace,
        "--route",
        route,
        "--payload",
        payload,
        "--timeout",
        str(timeout),
    ]
    if wait:
        cmd.append("--wait")
    sys.exit(subprocess.call(cmd))


@main.group("flow")
def flow_group() -> None:
    """Compile plain-Python flows into router actors."""


def _flow_error(exc: Exception) -> None:
    console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
    sys.exit(1)


_LOOP_CHECK_HELP = (
    "Skip infinite loop detection (a `while True:` without break or return compiles; the "
    "run-time iteration guard, --max-iterations, still bounds every loop)."
)


def _flow_warnings(program: FlowProgram) -> None:
    for warning in program.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)


@flow_group.command("validate")
@click.argument("flow_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--disable-infinite-loop-check", is_flag=True, help=_LOOP_CHECK_HELP)
@click.option("-v", "--verbose", is_flag=True, help="Show constants and every router.")
def flow_validate_command(
    flow_file: Path, disable_infinite_loop_check: bool, verbose: bool
) -> None:
    """Check FLOW_FILE without writing anything."""
    from .flow import FlowCompileError, compile_source

    try:
        program = compile_source(
            flow_file.read_text(encoding="utf-8"),
            str(flow_file),
            check_infinite_loops=not disable_infinite_loop_check,
        )
    except FlowCompileError as exc:
        _flow_error(exc)
        return
    for flow in program.flows:
        console.print(
            f"[green]ok[/] {flow.name}: {len(flow.entries)} routers, "
            f"calls {', '.join(flow.handlers + flow.subflows) or 'no actors'}"
        )
    if verbose:
        _flow_details(program)
    _flow_warnings(program)


def _flow_details(program: FlowProgram) -> None:
    for name, value in program.constants.items():
        console.print(f"  constant {name} = {value!r}", highlight=False)
    for var, env_value in program.env_reads.items():
        shown = "unset: the default" if env_value is None else f"= {env_value!r}"
        console.print(f"  environment {var} ({shown})", highlight=False)
    for flow in program.flows:
        for block_id in flow.entries:
            actor, _ = flow.routers[block_id]
            console.print(f"  router {actor} (line {flow.blocks[block_id].line})")


@flow_group.command("compile")
@click.argument("flow_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where routers.py, flow.dot and the manifests go.",
)
@click.option("--plot", is_flag=True, help="Also render flow.dot to SVG and PNG (Graphviz).")
@click.option(
    "--plot-width",
    type=click.IntRange(min=1),
    default=DEFAULT_LABEL_WIDTH,
    show_default=True,
    help="Maximum width of node labels, in characters (longer labels are wrapped).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option(
    "-v", "--verbose", is_flag=True, help="Show every router, constant and handler resolution."
)
@click.option("--disable-infinite-loop-check", is_flag=True, help=_LOOP_CHECK_HELP)
@click.option(
    "--actors",
    "actors_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="AsyncActor manifests of the handler actors: names resolve against them now.",
)
@click.option("--namespace", default=None, help="metadata.namespace of the router manifests.")
@click.option(
    "--max-iterations",
    type=int,
    default=0,
    help="Iteration guard of every while/for loop (default 1000).",
)
def flow_compile_command(
    flow_file: Path,
    output_dir: Path,
    plot: bool,
    plot_width: int,
    overwrite: bool,
    verbose: bool,
    disable_infinite_loop_check: bool,
    actors_dir: Path | None,
    namespace: str | None,
    max_iterations: int,
) -> None:
    """Compile FLOW_FILE into router actors (routers.py, flow.dot, manifests)."""
    from .flow import FlowCompileError, compile_file
    from .flow import plot as render_plot
    from .manifest import load_actors

    try:
        known = None
        if actors_dir is not None:
            known = {a.name: a.handler for a in load_actors(actors_dir)}
        compiled = compile_file(
            flow_file,
            output_dir,
            overwrite=overwrite,
            known_actors=known,
            namespace=namespace,
            max_iterations=max_iterations,
            check_infinite_loops=not disable_infinite_loop_check,
            label_width=plot_width,
        )
        plots = []
        if plot:
            for fmt in ("svg", "png"):
                plots.append(render_plot(output_dir / "flow.dot", fmt))
    except (FlowCompileError, LookupError, FileExistsError, FileNotFoundError, BuildError) as exc:
        _flow_error(exc)
        return
    except subprocess.CalledProcessError as exc:
        _flow_error(RuntimeError(f"dot failed: {exc.stderr}"))
        return
    for flow in compiled.program.flows:
        console.print(f"[green]compiled[/] {flow.name}: {len(flow.entries)} routers")
    if verbose:
        _flow_details(compiled.program)
        for h in compiled.handlers:
            console.print(f"  handler {h.name} -> actor {h.actor} ({h.env}={h.handler})")
    console.print(escape(f"[+] Successfully compiled flow to: {output_dir / 'routers.py'}"))
    console.print(escape(f"[+] Generated graphviz dot file: {output_dir / 'flow.dot'}"))
    for path in plots:
        console.print(escape(f"[+] Generated graphviz {path.suffix[1:]} plot: {path}"))
    if verbose:
        for path in compiled.files:
            console.print(f"  wrote {path}")
    _flow_warnings(compiled.program)


# --- the gateway: `asya mcp ...` (tools over MCP) and `asya tasks ...` (the HTTP task API) -----


def _gateway_options(command: Callable[..., None]) -> Callable[..., None]:
    """`--url` and `--token` of the commands that talk to a gateway."""
    command = click.option(
        "--token",
        metavar="KEY",
        help=f"API key (default: ${TOKEN_ENV}, else {_TOKEN_FILE_SHOWN}).",
    )(command)
    return click.option(
        "--url",
        metavar="URL",
        help=f"The gateway, e.g. http://127.0.0.1:8089/ (default: ${URL_ENV}).",
    )(command)


_TOKEN_FILE_SHOWN = "~/.asya/gateway-token"


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    sys.exit(1)


def _client(url: str | None, token: str | None) -> GatewayClient:
    try:
        return GatewayClient(GatewaySettings.resolve(url, token))
    except GatewayError as exc:
        _fail(str(exc))


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@main.group("mcp")
def mcp_group() -> None:
    """Call the tools of an asya gateway over MCP ($ASYA_CLI_MCP_URL, key $ASYA_CLI_TOKEN)."""
    # The MCP SDK logs warnings meant for its developers (e.g. how a session was closed);
    # what goes wrong for the user is reported as an error of its own.
    logging.getLogger("mcp").setLevel(logging.ERROR)


@mcp_group.command("list")
@_gateway_options
def mcp_list_command(url: str | None, token: str | None) -> None:
    """The tenant's tools, with their arguments."""
    client = _client(url, token)
    try:
        tools = client.list_tools()
    except GatewayError as exc:
        _fail(str(exc))
    table = Table("Tool", "Description", "Arguments", show_lines=True)
    for tool in tools:
        table.add_row(
            escape(tool.name),
            escape(tool.description or ""),
            escape("\n".join(describe_arguments(tool.inputSchema))),
        )
    Console().print(table)


_CALL_HELP = """Call TOOL (a task on the gateway) and show its progress; prints the result as JSON.

The tool's arguments are options named after its inputSchema's properties: --text="hello"
gives {"text": "hello"}; a non-string property's value is JSON (--count=3, --tags='["a"]').
Or give them all as one object with --json. `asya mcp list` shows each tool's arguments.

Exit status: 0 when the task succeeded or paused (resume it with `asya tasks resume`), 1 when
it failed, was canceled, or the call could not be made.
"""


@mcp_group.command(
    "call",
    help=_CALL_HELP,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.argument("tool")
@click.option("--json", "json_args", metavar="JSON", help="All arguments as one JSON object.")
@click.option(
    "--no-wait", is_flag=True, help="Start the task and print its id without waiting for it."
)
@_gateway_options
@click.pass_context
def mcp_call_command(
    ctx: click.Context,
    tool: str,
    json_args: str | None,
    no_wait: bool,
    url: str | None,
    token: str | None,
) -> None:
    client = _client(url, token)
    try:
        tools = {t.name: t for t in client.list_tools()}
    except GatewayError as exc:
        _fail(str(exc))
    if tool not in tools:
        _fail(f"the gateway has no tool {tool!r} (tools: {', '.join(tools) or 'none'})")
    schema = tools[tool].inputSchema
    try:
        arguments = parse_tool_arguments(schema, ctx.args, json_args)
    except ToolArgumentError as exc:
        usage = "\n  ".join(describe_arguments(schema))
        raise click.UsageError(f"{tool}: {exc}\n\nArguments of {tool}:\n  {usage}") from None
    if no_wait:
        try:
            outcome = client.call_tool(tool, arguments, wait=False)
        except GatewayError as exc:
            _fail(str(exc))
        if outcome.task_id:
            console.print(escape(f"[.] Task ID: {outcome.task_id}"), highlight=False)
        _print_json(outcome.content)
        if outcome.is_error or not outcome.task_id:
            _fail(f"{tool} did not start a task")
        console.print(f"[dim]follow it with: asya mcp status {escape(outcome.task_id)}[/]")
        return
    outcome = _call_with_progress(client, tool, arguments)
    _print_json(outcome.content)
    sys.exit(_report_outcome(tool, outcome))


def _call_with_progress(
    client: GatewayClient, tool: str, arguments: dict[str, object]
) -> ToolOutcome:
    """Calls `tool`, showing one bar of the task's hops (progress/total) and its current actor."""
    shown: list[str] = []
    with Progress(
        TextColumn("{task.description}:"),
        TaskProgressColumn(),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("Processing", total=None, state="")

        def update(event: ProgressUpdate) -> None:
            if event.task_id and not shown:
                shown.append(event.task_id)
                progress.console.print(escape(f"[.] Task ID: {event.task_id}"), highlight=False)
            total = event.total if event.total and event.total > 0 else None
            progress.update(
                bar,
                completed=event.progress,
                total=total,
                description=escape(event.actor or "Processing"),
                state=escape(event.kind or ""),
            )

        try:
            outcome = client.call_tool(tool, arguments, on_progress=update)
        except GatewayError as exc:
            progress.stop()
            _fail(str(exc))
        if outcome.task_id and not shown:
            progress.console.print(escape(f"[.] Task ID: {outcome.task_id}"), highlight=False)
        done = progress.tasks[0]
        finished = outcome.phase == "succeeded"
        progress.update(
            bar,
            description="Processing",
            total=done.total or 1,
            completed=(done.total or 1) if finished else done.completed,
            state=escape(outcome.phase or ("error" if outcome.is_error else "")),
        )
    return outcome


def _report_outcome(tool: str, outcome: ToolOutcome) -> int:
    """Says how the task ended (on stderr); the exit status of `asya mcp call`."""
    content, task = outcome.content, outcome.task_id or "?"
    if outcome.phase == "succeeded" and not outcome.is_error:
        return 0
    if outcome.phase == "paused":
        pause = content.get("pause")
        prompt = pause.get("prompt") if isinstance(pause, dict) else None
        console.print(
            f"[yellow]task {escape(task)} is paused:[/] {escape(str(prompt or ''))}",
            soft_wrap=True,
            highlight=False,
        )
        console.print(
            escape(f"[.] Resume it with: asya tasks resume {task} --input JSON"),
            soft_wrap=True,
            highlight=False,
        )
        return 0
    if outcome.phase == "failed":
        error = content.get("error")
        detail = ""
        if isinstance(error, dict):
            detail = f": {error.get('type') or 'Error'}: {error.get('message') or ''}"
        reason = content.get("reason") or "failed"
        console.print(
            f"[red]task {escape(task)} failed ({escape(str(reason))}){escape(detail)}[/]",
            soft_wrap=True,
            highlight=False,
        )
        return 1
    if outcome.phase == "canceled":
        console.print(f"[yellow]task {escape(task)} was canceled[/]")
        return 1
    text = content.get("text") if len(content) == 1 else None
    console.print(
        f"[red]error:[/] {tool} returned "
        + (escape(str(text)) if text else f"phase {escape(str(outcome.phase))}"),
        soft_wrap=True,
        highlight=False,
    )
    return 1


@mcp_group.command("status")
@click.argument("task_id", metavar="ID")
@_gateway_options
def mcp_status_command(task_id: str, url: str | None, token: str | None) -> None:
    """The task ID (phase, progress, result...) as JSON."""
    client = _client(url, token)
    try:
        _print_json(client.get_task(task_id))
    except GatewayError as exc:
        _fail(str(exc))


@main.group("tasks")
def tasks_group() -> None:
    """The tasks of an asya gateway: list, resume a paused one, cancel."""


@tasks_group.command("list")
@click.option(
    "--phase",
    type=click.Choice(
        ["pending", "processing", "retrying", "paused", "succeeded", "failed", "canceled"]
    ),
    help="Only the tasks in this phase.",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the tasks as JSON.")
@_gateway_options
def tasks_list_command(
    phase: str | None, limit: int, as_json: bool, url: str | None, token: str | None
) -> None:
    """The tenant's tasks, newest first."""
    client = _client(url, token)
    try:
        tasks = client.list_tasks(phase=phase, limit=limit)
    except GatewayError as exc:
        _fail(str(exc))
    if as_json:
        _print_json(tasks)
        return
    table = Table()
    table.add_column("ID", no_wrap=True, min_width=36)  # whole: it is what the other commands take
    for column in ("Tool", "Phase", "Actor", "Hops", "Updated"):
        table.add_column(column)
    for task in tasks:
        table.add_row(
            *(escape(str(task.get(k) or "")) for k in ("id", "tool", "phase", "actor")),
            f"{task.get('hops', 0)}/{task.get('total_hops', '?')}",
            escape(str(task.get("updated_at") or "")),
        )
    Console().print(table)


@tasks_group.command("resume")
@click.argument("task_id", metavar="ID")
@click.option(
    "--input",
    "input_json",
    required=True,
    metavar="JSON",
    help="A JSON object merged into the paused task's payload.",
)
@_gateway_options
def tasks_resume_command(task_id: str, input_json: str, url: str | None, token: str | None) -> None:
    """Resume the paused task ID with INPUT; prints the task."""
    try:
        value = json.loads(input_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--input")
    client = _client(url, token)
    try:
        _print_json(client.resume_task(task_id, value))
    except GatewayError as exc:
        _fail(str(exc))


@tasks_group.command("cancel")
@click.argument("task_id", metavar="ID")
@_gateway_options
def tasks_cancel_command(task_id: str, url: str | None, token: str | None) -> None:
    """Cancel the task ID; prints the task."""
    client = _client(url, token)
    try:
        _print_json(client.cancel_task(task_id))
    except GatewayError as exc:
        _fail(str(exc))


if __name__ == "__main__":
    main()
