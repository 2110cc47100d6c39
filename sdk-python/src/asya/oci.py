"""Pushing components to an OCI registry as CNCF wasm OCI artifacts, with oras-py.

Layout (CNCF TAG Runtime "wasm OCI artifact", what the host's `oci-client` pull accepts): an OCI
image manifest whose config has media type `application/vnd.wasm.config.v0+json` (listing the
component's imports and exports) and exactly one layer of media type `application/wasm` (the
component), with asya's annotations.

Auth: `$ASYA_REGISTRY_USERNAME` / `$ASYA_REGISTRY_PASSWORD`, else the docker config file
(`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`): `auths.<registry>.auth`, else the
credential helper of `credHelpers.<registry>` or `credsStore` (`docker-credential-<name> get`).
Basic and bearer-token challenges are both handled. Plain HTTP is used only for loopback
registries or those listed in `$ASYA_INSECURE_REGISTRIES` (comma-separated `host:port`).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import oras.container
import oras.oci
import oras.provider
import requests
import requests.adapters

CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
LAYER_MEDIA_TYPE = "application/wasm"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
#: Seconds a registry may stay silent (connecting, or between bytes of a response).
TIMEOUT = 60

log = logging.getLogger(__name__)


class RegistryError(Exception):
    """A registry operation failed; the message says what and where."""


@dataclass(frozen=True)
class Reference:
    """`oci://registry/repository[:tag|@digest]`."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def target(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        sep = "@" if self.digest else ":"
        return f"oci://{self.registry}/{self.repository}{sep}{self.target}"


_REF = re.compile(
    r"^oci://(?P<registry>[^/]+)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def parse_reference(text: str) -> Reference:
    match = _REF.match(text)
    if not match:
        raise RegistryError(
            f"{text!r} is not an OCI reference like oci://registry.example/team/actor:v1"
        )
    return Reference(match["registry"], match["repo"], match["tag"], match["digest"])


def _is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    return host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.")


def scheme_for(registry: str) -> str:
    insecure = {r.strip() for r in os.environ.get("ASYA_INSECURE_REGISTRIES", "").split(",")}
    return "http" if _is_loopback(registry) or registry in insecure else "https"


def _docker_config() -> dict[str, Any]:
    config_dir = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    try:
        config = json.loads((config_dir / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def credential_helper(helper: str, registry: str) -> tuple[str, str] | None:
    """Asks `docker-credential-<helper>` for the credentials of `registry` (docker's protocol:
    the server on stdin, `{"Username": ..., "Secret": ...}` on stdout); None when it has none."""
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, "get"], input=registry, capture_output=True, text=True, timeout=TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("credential helper %s failed: %s", program, exc)
        return None
    if proc.returncode != 0:
        if "not found" not in (proc.stdout + proc.stderr).lower():
            log.warning("credential helper %s failed: %s", program, proc.stderr.strip())
        return None
    try:
        answer = json.loads(proc.stdout)
        return str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        log.warning("credential helper %s answered something other than credentials", program)
        return None


def credentials(registry: str) -> tuple[str, str] | None:
    """The user name and password for `registry` (see the module docstring), if any."""
    user, password = (
        os.environ.get("ASYA_REGISTRY_USERNAME"),
        os.environ.get("ASYA_REGISTRY_PASSWORD"),
    )
    if user and password:
        return user, password
    config = _docker_config()
    for key, entry in (config.get("auths") or {}).items():
        if key.removeprefix("https://").removeprefix("http://").rstrip("/") == registry:
            auth = entry.get("auth") if isinstance(entry, dict) else None
            if auth:
                user, _, password = base64.b64decode(auth).decode().partition(":")
                return user, password
    helper = (config.get("credHelpers") or {}).get(registry) or config.get("credsStore")
    return credential_helper(str(helper), registry) if helper else None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


Progress = Callable[[int, int], None]


class _Timeouts(requests.adapters.HTTPAdapter):
    """Gives every request of oras' session a timeout (oras sets none)."""

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if len(args) < 2 and kwargs.get("timeout") is None:
            kwargs["timeout"] = TIMEOUT
        return super().send(request, *args, **kwargs)


class _Client(oras.provider.Registry):
    """oras' registry client, failing at once: oras retries every failed request five times,
    sleeping 3 s to 83 s in between (over two minutes for credentials a registry refuses)."""

    do_request = inspect.unwrap(oras.provider.Registry.do_request)


def _connect(registry: str) -> _Client:
    """An oras client for `registry`, logged in with `credentials(registry)`."""
    scheme = scheme_for(registry)
    try:
        probe = requests.get(f"{scheme}://{registry}/v2/", timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise RegistryError(f"cannot reach registry {registry}: {exc}") from None
    # oras' token backend answers bearer challenges only; a registry asking for basic auth
    # (htpasswd) needs its basic backend.
    basic = probe.headers.get("WWW-Authenticate", "").lower().startswith("basic")
    client = _Client(
        hostname=registry, insecure=scheme == "http", auth_backend="basic" if basic else "token"
    )
    client.session.mount("https://", _Timeouts())
    client.session.mount("http://", _Timeouts())
    creds = credentials(registry)
    if creds:
        client.auth.set_basic_auth(*creds)
    elif basic:
        raise RegistryError(
            f"registry {registry} asks for a user name and password: set "
            f"ASYA_REGISTRY_USERNAME and ASYA_REGISTRY_PASSWORD, or `docker login {registry}`"
        )
    return client


def _check(response: requests.Response, what: str, registry: str) -> None:
    if response.status_code not in (200, 201, 202):
        raise RegistryError(
            f"{what}: HTTP {response.status_code} from {registry}: {response.text[:300]}"
        )


def wasm_config(component: bytes, imports: list[str], exports: list[str]) -> dict[str, Any]:
    """The CNCF wasm config (`application/vnd.wasm.config.v0+json`)."""
    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "author": "asya",
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [sha256(component)],
        "component": {"exports": exports, "imports": imports, "target": "asya:actor/actor"},
    }


def push(
    component_path: Path,
    reference: str,
    *,
    imports: list[str],
    exports: list[str],
    annotations: dict[str, str],
    progress: Progress | None = None,
) -> tuple[Reference, str]:
    """Pushes `component_path` to `reference`; returns the reference and the manifest digest."""
    ref = parse_reference(reference)
    if ref.digest:
        raise RegistryError("push to a tag (oci://registry/repo:tag), not to a digest")
    component = component_path.read_bytes()
    client = _connect(ref.registry)
    container = oras.container.Container(f"{ref.repository}:{ref.target}", registry=ref.registry)
    # As parsed here (oras would take a first path component with a dot for a registry).
    namespace, _, container.repository = ref.repository.rpartition("/")
    container.registry, container.namespace = ref.registry, namespace or None
    with tempfile.TemporaryDirectory(prefix="asya-push-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_bytes(
            json.dumps(wasm_config(component, imports, exports), sort_keys=True).encode()
        )
        layer = oras.oci.NewLayer(str(component_path), media_type=LAYER_MEDIA_TYPE)
        layer["annotations"] = {"org.opencontainers.image.title": component_path.name}
        config, _ = oras.oci.ManifestConfig(str(config_path), CONFIG_MEDIA_TYPE)
        manifest = oras.oci.NewManifest()
        manifest.update(
            mediaType=MANIFEST_MEDIA_TYPE,
            artifactType=CONFIG_MEDIA_TYPE,
            config=config,
            layers=[layer],
            annotations={
                "org.opencontainers.image.created": datetime.now(UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                **annotations,
            },
        )
        try:
            if progress:
                progress(0, len(component))
            blob = client.upload_blob(str(component_path), container, layer)
            _check(blob, f"uploading {component_path.name} to {ref}", ref.registry)
            if progress:
                progress(len(component), len(component))
            blob = client.upload_blob(str(config_path), container, config)
            _check(blob, f"uploading the config of {ref}", ref.registry)
            response = client.upload_manifest(manifest, container)
        except (requests.RequestException, ValueError) as exc:
            raise RegistryError(f"pushing to {ref}: {exc}") from None
    _check(response, f"pushing the manifest of {ref}", ref.registry)
    body = response.request.body  # the manifest's exact bytes: its digest
    return ref, sha256(body if isinstance(body, bytes) else str(body).encode())
