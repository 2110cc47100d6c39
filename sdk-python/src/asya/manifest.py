"""AsyncActor manifests and the pipeline description that `asya dev` runs.

A pipeline directory holds the handler modules, `actors/*.yaml` (the same AsyncActor manifests
that deploy the actors to a cluster) and `pipeline.yaml` with the route payloads take.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

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

    def actor(self, name: str) -> ActorManifest:
        for actor in self.actors:
            if actor.name == name:
                return actor
        known = ", ".join(a.name for a in self.actors)
        raise BuildError(f"no actor named {name!r} in {self.actors_dir} (known: {known})")


def load_actors(directory: Path) -> list[ActorManifest]:
    """Every AsyncActor in the YAML files under `directory`, sorted by file name."""
    actors: list[ActorManifest] = []
    files = sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")])
    for path in files:
        if path.name == "pipeline.yaml":
            continue
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise BuildError(f"{path}: not valid YAML: {exc}") from None
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("kind") != "AsyncActor":
                continue
            if doc.get("apiVersion") != API_VERSION:
                raise BuildError(
                    f"{path}: apiVersion is {doc.get('apiVersion')!r}, expected {API_VERSION!r}"
                )
            name = (doc.get("metadata") or {}).get("name")
            spec = doc.get("spec") or {}
            if not name:
                raise BuildError(f"{path}: an AsyncActor has no metadata.name")
            handler = spec.get("handler")
            if not handler:
                raise BuildError(f"{path}: actor {name!r} has no spec.handler")
            actors.append(
                ActorManifest(
                    name=name,
                    handler=handler,
                    mode=spec.get("mode", "payload"),
                    runtime=spec.get("runtime", "wasm"),
                    path=path,
                )
            )
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
    spec_file = root / "pipeline.yaml"
    if spec_file.is_file():
        spec = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
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
    return Pipeline(
        root=root,
        actors_dir=actors_dir,
        actors=actors,
        route=route,
        manifest_dirs=manifest_dirs,
        flow_routers=flow_routers,
    )
