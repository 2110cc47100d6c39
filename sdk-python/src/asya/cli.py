"""The `asya` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from . import __version__
from .build import MODES, BuildResult, build
from .flow.codegen import DEFAULT_LABEL_WIDTH
from .flow.compiler import FlowProgram
from .handler_ref import BuildError
from .host import find_host_binary
from .manifest import ActorManifest, load_pipeline
from .oci import RegistryError, push

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
def dev_command(
    pipeline_dir: Path,
    payload: str | None,
    input_file: Path | None,
    route: str | None,
    hops: bool | None,
    output: Path | None,
    window: int,
) -> None:
    """Build every actor of PIPELINE_DIR and run it locally, in one host, with no servers."""
    if (payload is None) == (input_file is None):
        raise click.UsageError("give exactly one of --payload JSON or --input FILE")
    try:
        pipeline = load_pipeline(pipeline_dir)
        steps = [s.strip() for s in route.split(",")] if route else pipeline.route
        if not steps:
            raise BuildError(
                f"no route: add `route: [...]` to {pipeline.root}/pipeline.yaml or pass --route"
            )
        for step in steps:
            pipeline.actor(step)
        components = _build_actors(
            pipeline.root, pipeline.actors, pipeline.root / ".asya" / "build"
        )
        host = find_host_binary()
    except BuildError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(1)
    cmd = [str(host), "dev"]
    for directory in pipeline.manifest_dirs:
        cmd += ["--manifests", str(directory)]
    cmd += [
        "--route",
        ",".join(steps),
        "--window",
        str(window),
    ]
    for name, path in components.items():
        cmd += ["--component", f"{name}={path}"]
    for actor in pipeline.actors:
        if actor.runtime == "python":
            cmd += ["--python-actor", f"{actor.name}={pipeline.root}"]
    cmd += ["--python", sys.executable]
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


if __name__ == "__main__":
    main()
