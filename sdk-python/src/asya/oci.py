"""Pushing components to an OCI registry as CNCF wasm OCI artifacts.

Layout (CNCF TAG Runtime "wasm OCI artifact"): an OCI image manifest whose config has media type
`application/vnd.wasm.config.v0+json` (listing the component's imports and exports) and exactly
one layer of media type `application/wasm` (the component), with asya's annotations.

Auth: `$ASYA_REGISTRY_USERNAME` / `$ASYA_REGISTRY_PASSWORD`, else the standard docker config file
(`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, `auths.<registry>.auth`). Basic and
bearer-token challenges are both handled. Plain HTTP is used only for loopback registries or
those listed in `$ASYA_INSECURE_REGISTRIES` (comma-separated `host:port`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
LAYER_MEDIA_TYPE = "application/wasm"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CHUNK = 1 << 20


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


def credentials(registry: str) -> tuple[str, str] | None:
    user, password = (
        os.environ.get("ASYA_REGISTRY_USERNAME"),
        os.environ.get("ASYA_REGISTRY_PASSWORD"),
    )
    if user and password:
        return user, password
    config_dir = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    try:
        config = json.loads((config_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key, entry in (config.get("auths") or {}).items():
        if key.removeprefix("https://").removeprefix("http://").rstrip("/") == registry:
            auth = entry.get("auth")
            if auth:
                user, _, password = base64.b64decode(auth).decode().partition(":")
                return user, password
    return None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


Progress = Callable[[int, int], None]


class Registry:
    """A minimal OCI distribution client for pushing one artifact."""

    def __init__(self, registry: str) -> None:
        self.registry = registry
        self.base = f"{scheme_for(registry)}://{registry}"
        self.session = requests.Session()
        self.creds = credentials(registry)
        self.token: str | None = None

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        for attempt in range(2):
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            elif self.creds:
                user, password = self.creds
                basic = base64.b64encode(f"{user}:{password}".encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
            try:
                response = self.session.request(method, url, headers=headers, timeout=60, **kwargs)
            except requests.ConnectionError as exc:
                raise RegistryError(f"cannot reach registry {self.registry}: {exc}") from None
            if response.status_code == 401 and attempt == 0 and self._authenticate(response):
                continue
            return response
        return response

    def _authenticate(self, response: requests.Response) -> bool:
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("basic"):
            return False  # credentials were already sent if we had any
        if not challenge.lower().startswith("bearer"):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            return False
        auth = self.creds if self.creds else None
        token_response = self.session.get(realm, params=params, auth=auth, timeout=30)
        if token_response.status_code != 200:
            raise RegistryError(
                f"registry {self.registry} refused a token: HTTP {token_response.status_code}"
            )
        body = token_response.json()
        self.token = body.get("token") or body.get("access_token")
        return bool(self.token)

    def _check(self, response: requests.Response, what: str) -> requests.Response:
        if response.status_code >= 400:
            raise RegistryError(
                f"{what}: HTTP {response.status_code} from {self.registry}: {response.text[:300]}"
            )
        return response

    def push_blob(self, repository: str, data: bytes, progress: Progress | None = None) -> str:
        digest = sha256(data)
        head = self._request("HEAD", f"{self.base}/v2/{repository}/blobs/{digest}")
        if head.status_code == 200:
            if progress:
                progress(len(data), len(data))
            return digest
        start = self._check(
            self._request("POST", f"{self.base}/v2/{repository}/blobs/uploads/"),
            f"starting an upload to {repository}",
        )
        location = self._location(start)
        sent = 0
        while sent < len(data):
            chunk = data[sent : sent + CHUNK]
            response = self._check(
                self._request(
                    "PATCH",
                    location,
                    data=chunk,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{sent}-{sent + len(chunk) - 1}",
                    },
                ),
                "uploading a chunk",
            )
            location = self._location(response)
            sent += len(chunk)
            if progress:
                progress(sent, len(data))
        sep = "&" if "?" in location else "?"
        self._check(
            self._request("PUT", f"{location}{sep}digest={digest}"), "completing the upload"
        )
        return digest

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.registry} sent no upload location")
        return location if location.startswith("http") else f"{self.base}{location}"

    def put_manifest(self, ref: Reference, manifest: bytes) -> str:
        self._check(
            self._request(
                "PUT",
                f"{self.base}/v2/{ref.repository}/manifests/{ref.tag or 'latest'}",
                data=manifest,
                headers={"Content-Type": MANIFEST_MEDIA_TYPE},
            ),
            f"pushing the manifest of {ref}",
        )
        return sha256(manifest)


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
    registry = Registry(ref.registry)
    config = json.dumps(wasm_config(component, imports, exports), sort_keys=True).encode()
    config_digest = registry.push_blob(ref.repository, config)
    layer_digest = registry.push_blob(ref.repository, component, progress)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": CONFIG_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [
            {
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": layer_digest,
                "size": len(component),
                "annotations": {"org.opencontainers.image.title": component_path.name},
            }
        ],
        "annotations": {
            "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **annotations,
        },
    }
    body = json.dumps(manifest, sort_keys=True).encode()
    return ref, registry.put_manifest(ref, body)
