"""The `asya` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
from rich.console import Console
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
        console.print(f"[red]error:[/] {exc}")
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
        console.print(f"[red]error:[/] {exc}")
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
    with _progress() as progress, ThreadPoolExecutor(max_workers=2) as pool:
        tasks = {a.name: progress.add_task(f"{a.name}: checking", total=None) for a in wasm_actors}

        def one(actor: ActorManifest) -> tuple[ActorManifest, BuildResult]:
            def started(what: str) -> None:
                progress.update(tasks[actor.name], description=f"{actor.name}: {what}")

            result = build(
                actor.handler,
                pipeline_root,
                out_dir / f"{actor.name}.wasm",
                actor.mode,
                on_start=started,
            )
            progress.remove_task(tasks[actor.name])
            return actor, result

        for actor, result in pool.map(one, wasm_actors):
            _report(f"{actor.name} ({actor.handler})", result)
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
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    cmd = [
        str(host),
        "dev",
        "--manifests",
        str(pipeline.actors_dir),
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
        console.print(f"[red]error:[/] {exc}")
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


if __name__ == "__main__":
    main()
