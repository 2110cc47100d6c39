"""The Flow DSL: plain Python control flow over a payload, compiled into router actors.

`compile_file` is what `asya flow compile` runs; the pieces are `compiler` (source -> blocks),
`codegen` (blocks -> routers.py, flow.dot, manifests) and `runtime` (what the routers run).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .codegen import (
    DEFAULT_LABEL_WIDTH,
    HandlerActor,
    dot_source,
    handler_actors,
    handlers_listing,
    router_manifests,
    routers_source,
)
from .compiler import FlowCompileError, FlowProgram, compile_source

__all__ = ["CompiledFlows", "FlowCompileError", "compile_file", "compile_source", "plot"]


@dataclass
class CompiledFlows:
    """What `compile_file` wrote."""

    program: FlowProgram
    output_dir: Path
    files: list[Path] = field(default_factory=list)
    handlers: list[HandlerActor] = field(default_factory=list)

    @property
    def routers(self) -> list[str]:
        return [f.routers[b][0] for f in self.program.flows for b in f.entries]


def compile_file(
    source: Path,
    output_dir: Path,
    *,
    overwrite: bool = False,
    known_actors: dict[str, str] | None = None,
    namespace: str | None = None,
    max_iterations: int = 0,
    check_infinite_loops: bool = True,
    label_width: int = DEFAULT_LABEL_WIDTH,
    environ: Mapping[str, str] | None = None,
) -> CompiledFlows:
    """Compiles the flow(s) of `source` into `output_dir`: `routers.py` (self-contained: the
    router runtime is inlined), `flow.dot` (labels wrapped at `label_width` characters),
    `actors/<flow>.yaml` and `handlers.yaml`."""
    program = compile_source(
        source.read_text(encoding="utf-8"),
        str(source),
        max_iterations,
        check_infinite_loops=check_infinite_loops,
        environ=environ,
    )
    handlers = handler_actors(program, known_actors)
    outputs: dict[str, str] = {
        "routers.py": routers_source(program, source.name),
        "flow.dot": dot_source(program, label_width),
        "handlers.yaml": handlers_listing(program, handlers),
    }
    for name, text in router_manifests(program, handlers, namespace).items():
        outputs[f"actors/{name}"] = text
    if output_dir.exists() and not overwrite:
        clashes = [name for name in outputs if (output_dir / name).exists()]
        if clashes:
            raise FileExistsError(
                f"{output_dir} already holds {', '.join(sorted(clashes))}; pass --overwrite"
            )
    written = []
    # Older compilers wrote the runtime next to routers.py; routers.py no longer imports it.
    (output_dir / "_asya_flow.py").unlink(missing_ok=True)
    for name, text in outputs.items():
        path = output_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return CompiledFlows(program, output_dir, written, handlers)


def plot(dot_file: Path, fmt: str = "svg") -> Path:
    """Renders `flow.dot` with Graphviz's `dot` (installed by scripts/setup.sh)."""
    dot = shutil.which("dot")
    if dot is None:
        raise FileNotFoundError("Graphviz `dot` is not installed (scripts/setup.sh installs it)")
    out = dot_file.with_suffix(f".{fmt}")
    cmd = [dot, f"-T{fmt}", str(dot_file), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out
