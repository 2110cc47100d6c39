"""Components as OCI artifacts against a real registry (Debian's docker-registry, started here on
a free port): push and pull round trip, the CNCF layout, interoperability with the oras library,
credentials from a docker credential helper, and the failure modes (digest mismatch, unknown tag,
registry down, no credentials)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import oras.client
import pytest
import requests

from asya.build import build
from asya.oci import RegistryError, push


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_registry(tmp_path: Path, extra: str = "") -> Iterator[tuple[str, Path]]:
    binary = shutil.which("docker-registry")
    assert binary, (
        "docker-registry is missing: run scripts/setup.sh (apt-get install docker-registry)"
    )
    port = free_port()
    storage = tmp_path / "registry"
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {storage}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n{extra}"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status = requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code
                if status in (200, 401):
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", storage
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serve_registry(tmp_path) as served:
        yield served


@pytest.fixture(scope="module")
def component(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("c") / "behave.wasm"
    return build("behaviours.behave", repo / "tests" / "fixtures" / "handlers", out).output


def cli(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if cache is not None:
        env["ASYA_CACHE_DIR"] = str(cache)
    return subprocess.run([str(Path(sys.executable).parent / "asya"), *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def host(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    repo = Path(__file__).resolve().parents[2]
    return subprocess.run([str(repo / "target" / "release" / "asya-host"), *args],
                          env={**os.environ, "ASYA_CACHE_DIR": str(cache), "ASYA_LOG": "warn"},
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_pull_round_trip_with_the_cncf_layout(
    registry: tuple[str, Path], component: Path, tmp_path: Path
) -> None:
    address, _ = registry
    ref = f"oci://{address}/asya/behave:v1"
    pushed = cli("push", str(component), ref)
    assert pushed.returncode == 0, pushed.stderr
    manifest_digest = pushed.stdout.strip().splitlines()[-1]
    assert manifest_digest.startswith("sha256:")

    manifest = requests.get(
        f"http://{address}/v2/asya/behave/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    ).json()
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/wasm"]
    assert manifest["layers"][0]["digest"] == sha256(component)
    annotations = manifest["annotations"]
    assert annotations["sh.asya.handler"] == "behaviours.behave"
    assert annotations["sh.asya.mode"] == "payload"
    config = requests.get(
        f"http://{address}/v2/asya/behave/blobs/{manifest['config']['digest']}", timeout=10
    ).json()
    assert "handle" in config["component"]["exports"]
    assert "describe" in config["component"]["exports"]
    assert any(i.startswith("wasi:") for i in config["component"]["imports"])

    cache = tmp_path / "cache"
    out = tmp_path / "pulled.wasm"
    pulled = host("pull", ref, "-o", str(out), cache=cache)
    assert pulled.returncode == 0, pulled.stderr
    info = json.loads(pulled.stdout)
    assert info["manifest_digest"] == manifest_digest
    assert info["digest"] == sha256(component)
    assert out.read_bytes() == component.read_bytes()
    assert not info["from_cache"]
    by_digest = host("pull", f"oci://{address}/asya/behave@{manifest_digest}", cache=cache)
    assert json.loads(by_digest.stdout)["from_cache"], "second pull by digest uses the cache"


def test_build_push_in_one_command(registry: tuple[str, Path], tmp_path: Path) -> None:
    address, _ = registry
    (tmp_path / "h.py").write_text("def f(p):\n    return p\n")
    proc = cli("build", "h.f", "--source", str(tmp_path), "-o", str(tmp_path / "h.wasm"),
               "--push", f"oci://{address}/asya/h:v1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = requests.get(
        f"http://{address}/v2/asya/h/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    ).json()
    assert len(manifest["annotations"]["sh.asya.source-digest"]) == 64


def test_oras_pulls_our_artifact_and_our_host_runs_one_pushed_by_oras(
    registry: tuple[str, Path], component: Path, tmp_path: Path, repo: Path
) -> None:
    address, _ = registry
    assert cli("push", str(component), f"oci://{address}/asya/behave:v1").returncode == 0
    client = oras.client.OrasClient(hostname=address, insecure=True)
    files = client.pull(target=f"{address}/asya/behave:v1", outdir=str(tmp_path / "oras"))
    assert [Path(f).read_bytes() for f in files] == [component.read_bytes()]

    # oras pushes a CNCF-layout artifact; our host pulls and runs it.
    staged = tmp_path / "staged"
    staged.mkdir()
    shutil.copy(component, staged / "actor.wasm")
    (staged / "config.json").write_text(json.dumps({"architecture": "wasm", "os": "wasip2"}))
    cwd = os.getcwd()
    os.chdir(staged)
    try:
        client.push(
            target=f"{address}/oras/behave:v2",
            files=["actor.wasm:application/wasm"],
            manifest_config="config.json:application/vnd.wasm.config.v0+json",
            disable_path_validation=True,
        )
    finally:
        os.chdir(cwd)
    manifests = tmp_path / "actors"
    manifests.mkdir()
    (manifests / "a.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: behave}\n"
        f"spec: {{handler: behaviours.behave, component: oci://{address}/oras/behave:v2}}\n"
    )
    proc = host("dev", "--manifests", str(manifests), "--route", "behave",
                "--component", f"behave=oci://{address}/oras/behave:v2",
                "--payload", '{"text": "from oras"}', cache=tmp_path / "cache")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["payload"] == {"text": "from oras", "seen_by": 1}


def test_digest_mismatch_unknown_tag_and_registry_down(
    registry: tuple[str, Path], component: Path, tmp_path: Path
) -> None:
    address, storage = registry
    assert cli("push", str(component), f"oci://{address}/asya/behave:v1").returncode == 0
    # Corrupt the stored layer: same size, different bytes.
    hex_digest = sha256(component).split(":")[1]
    blob = storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    bad = host("pull", f"oci://{address}/asya/behave:v1", cache=tmp_path / "c1")
    assert bad.returncode != 0
    assert "digest" in bad.stderr.lower() and "mismatch" in bad.stderr.lower(), bad.stderr

    unknown = host("pull", f"oci://{address}/asya/behave:nope", cache=tmp_path / "c2")
    assert unknown.returncode != 0
    assert "not found" in unknown.stderr, unknown.stderr

    started = time.monotonic()
    down = host("pull", f"oci://127.0.0.1:{free_port()}/asya/behave:v1", cache=tmp_path / "c3")
    assert down.returncode != 0
    assert "unavailable after 5 attempts" in down.stderr, down.stderr
    assert "retrying" in down.stderr
    assert time.monotonic() - started > 2.0, "backoff between attempts"


# `s3cret` for user `asya`, bcrypt with the fewest rounds (docker-registry's htpasswd format).
HTPASSWD = "asya:$2b$04$OIjrkyWXRAcQrR1bWB7NyuLPW/nJYB5dX/VUfQww6lzKS7wLMzK.O\n"


@pytest.mark.parametrize("config_key", ["credHelpers", "credsStore"])
def test_a_docker_credential_helper_logs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_key: str
) -> None:
    (tmp_path / "htpasswd").write_text(HTPASSWD)
    auth = f"auth: {{htpasswd: {{realm: asya-test, path: {tmp_path / 'htpasswd'}}}}}\n"
    helper_log = tmp_path / "helper.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-test"
    helper.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 1\n'
        "read server\n"
        f'echo "$server" >> {helper_log}\n'
        'echo \'{"ServerURL": "\'"$server"\'", "Username": "asya", "Secret": "s3cret"}\'\n'
    )
    helper.chmod(0o755)
    component = tmp_path / "c.wasm"
    component.write_bytes(b"\0asm" + os.urandom(1000))
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    with serve_registry(tmp_path, auth) as (address, _):
        # No credentials: refused at once, with what to do.
        monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
        monkeypatch.delenv("ASYA_REGISTRY_USERNAME", raising=False)
        monkeypatch.delenv("ASYA_REGISTRY_PASSWORD", raising=False)
        started = time.monotonic()
        with pytest.raises(RegistryError, match="asks for a user name and password"):
            push(component, f"oci://{address}/asya/c:v1", imports=[], exports=[], annotations={})
        assert time.monotonic() - started < 10

        entry = {address: "test"} if config_key == "credHelpers" else "test"
        (docker_config / "config.json").write_text(json.dumps({config_key: entry}))
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        ref, digest = push(
            component, f"oci://{address}/asya/c:v1", imports=[], exports=[], annotations={}
        )
        assert str(ref) == f"oci://{address}/asya/c:v1"
        assert helper_log.read_text().split() == [address]
        manifest = requests.get(
            f"http://{address}/v2/asya/c/manifests/v1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            auth=("asya", "s3cret"),
            timeout=10,
        )
        assert (
            manifest.headers["Docker-Content-Digest"]
            == digest
            == f"sha256:{hashlib.sha256(manifest.content).hexdigest()}"
        )
        assert manifest.json()["layers"][0]["digest"] == sha256(component)

        # The environment's credentials come first; wrong ones are an error, not a retry loop.
        monkeypatch.setenv("ASYA_REGISTRY_USERNAME", "asya")
        monkeypatch.setenv("ASYA_REGISTRY_PASSWORD", "wrong")
        started = time.monotonic()
        with pytest.raises(RegistryError, match="UNAUTHORIZED"):
            push(component, f"oci://{address}/asya/c:v2", imports=[], exports=[], annotations={})
        assert time.monotonic() - started < 10
        assert helper_log.read_text().split() == [address]
