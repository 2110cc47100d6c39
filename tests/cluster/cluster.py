"""A real Kubernetes control plane for the cluster tests, built by `scripts/control-plane.sh`
(`.cache/control-plane/bin`): etcd, kube-apiserver (RBAC, TLS, service-account tokens),
kube-controller-manager (Deployments -> ReplicaSets -> Pods, the garbage collector, service
accounts) and kwok (a fake kubelet: one fake Node whose pods it marks Running and Ready).

There is no kube-scheduler: `Cluster` binds pending pods itself (`_bind_pending`, a list every
0.5 s and a Binding per pod) to the fake node, when the pod's nodeSelector matches the node's
labels. That costs no process and no build; kube-scheduler would be one more process to start
and run (its build is cheap: ~9 s more on top of the cached kube-controller-manager build, a
72 MB binary), and what these tests check ends at pods existing and being ready, not at
scheduling decisions (taints, resources and affinity are not looked at).

Helpers for tests: `Cluster.kubectl()`, `.helm()`, `.apply()` (YAML text, a file or dicts, one
server-side apply), `.get()`/`.request()` (a small REST client over the admin token, cheap
enough to poll), `.create_namespace()`, `.service_account_kubeconfig()`; `wait_for()` (every
wait is bounded), `wait_for_actor()`, `wait_gone()`, `render()` (`asya-operator render`),
`subset_mismatches()`, `pods_of()`, `printer_rows()`. `Nats` is a real nats-server with
JetStream and its monitoring endpoint (`streams()`, `consumers()`); `Operator` is a real
`asya-operator run` process (`metrics()`, `leading()`, `reconciliations()`). The fixtures are
in conftest.py.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".cache" / "control-plane" / "bin"
KEDA_CRDS = ROOT / ".cache" / "control-plane" / "keda-crds"
OPERATOR = ROOT / "target" / "release" / "asya-operator"
NATS_SERVER = Path(sys.executable).parent / "nats-server"
#: The chart under test (another copy through ASYA_TEST_CHART, e.g. one with a CRD being fixed).
CHART = Path(os.environ.get("ASYA_TEST_CHART") or ROOT / "charts" / "asya")
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kwok",
    "kubectl",
    "helm",
)
#: The fake node kwok manages (by this annotation); pods are bound to it.
NODE = "kwok-node-0"
NODE_LABELS = {
    "kubernetes.io/hostname": NODE,
    "kubernetes.io/os": "linux",
    "type": "kwok",
    # The GPU example's nodeSelector.
    "nvidia.com/gpu.present": "true",
}
SERVICE_CIDR = "10.96.0.0/16"

T = TypeVar("T")


class ClusterError(AssertionError):
    """A control-plane component failed (its log's last lines are in the message)."""


def missing_binaries() -> list[str]:
    """What the tests need that is not built: a list of messages (empty when all is there)."""
    missing = [
        str(BIN / name) for name in COMPONENTS if not os.access(BIN / name, os.X_OK)
    ]
    if not list(KEDA_CRDS.glob("*.yaml")):
        missing.append(f"{KEDA_CRDS}/*.yaml")
    if not os.access(OPERATOR, os.X_OK):
        missing.append(str(OPERATOR))
    if not os.access(NATS_SERVER, os.X_OK):
        missing.append(str(NATS_SERVER))
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Calls `check` until it returns something truthy (returned) or `timeout` seconds pass
    (AssertionError naming `what`, the last value or exception, and `on_timeout()`'s text)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last: {last!r})\n{extra}"
            )
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"({path}: {exc})"
    return "\n".join(text[-lines:])


#: Run children under `setpriv --pdeathsig KILL` (util-linux) where there is one: they get
#: SIGKILL when the test process dies, even by SIGKILL, so no component outlives a session.
SETPRIV = shutil.which("setpriv")


class Process:
    """A child process in its own process group, its output in `log`."""

    def __init__(
        self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.log = log
        if SETPRIV:
            args = [SETPRIV, "--pdeathsig", "KILL", "--", *args]
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> bool:
        """True, or ClusterError with the log's last lines if the process exited."""
        if not self.alive():
            raise ClusterError(
                f"{self.name} exited ({self.popen.returncode}); last lines of {self.log}:\n"
                + tail(self.log)
            )
        return True

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 5.0) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill(signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.log}) ---\n{tail(self.log, lines)}"


# --- certificates -----------------------------------------------------------------------


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_pki(directory: Path) -> dict[str, Path]:
    """A CA, the API server's serving certificate (127.0.0.1, localhost and the in-cluster
    names) signed by it, and the service-account signing key pair."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asya-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName(name)
        for name in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    names += [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.IPv4Network(SERVICE_CIDR)[1]),
    ]
    serving = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca": directory / "ca.crt",
        "cert": directory / "apiserver.crt",
        "key": directory / "apiserver.key",
        "sa_key": directory / "sa.key",
        "sa_pub": directory / "sa.pub",
    }
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(_pem_key(key))
    files["sa_key"].write_bytes(_pem_key(sa_key))
    files["sa_pub"].write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for name in ("key", "sa_key"):
        files[name].chmod(0o600)
    return files


def kubeconfig(server: str, ca: Path, user: str, token: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "asya-test",
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": base64.b64encode(
                            ca.read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": user, "context": {"cluster": "asya-test", "user": user}}
            ],
            "current-context": user,
        }
    )


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# --- the cluster ------------------------------------------------------------------------


class Cluster:
    """etcd, kube-apiserver, kube-controller-manager and kwok in `directory`, on free loopback
    ports. `start()` returns when all answer; `stop()` kills every process group."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: list[Process] = []
        self.admin_token = secrets.token_hex(16)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.pki: dict[str, Path] = {}
        self.kubeconfig = directory / "admin.kubeconfig"
        self.timings: dict[str, float] = {}
        self._stop_binder = threading.Event()
        self._binder: threading.Thread | None = None
        self.bound: set[str] = set()
        self._ssl: ssl.SSLContext | None = None
        # kubectl and helm keep caches and config under HOME and XDG dirs: keep them here.
        home = directory / "home"
        home.mkdir(exist_ok=True)
        self.env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(home / "kube-cache"),
            "HELM_CACHE_HOME": str(home / "helm-cache"),
            "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data"),
        }

    # -- start and stop --

    def _spawn(self, name: str, args: list[str]) -> Process:
        process = Process(name, args, self.logs / f"{name}.log", env=self.env)
        self.processes.append(process)
        return process

    def start(self) -> None:
        t0 = time.monotonic()
        self.pki = write_pki(self.dir)
        self.kubeconfig.write_text(
            kubeconfig(self.server, self.pki["ca"], "admin", self.admin_token)
        )
        etcd_port, etcd_peer = free_port(), free_port()
        etcd = self._spawn(
            "etcd",
            [
                str(BIN / "etcd"),
                "--name=default",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        tokens = self.dir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                # The `kubernetes` Service's endpoint (no pod runs for real, and a loopback
                # address is refused there).
                "--advertise-address=192.0.2.10",
                f"--secure-port={self.port}",
                f"--tls-cert-file={self.pki['cert']}",
                f"--tls-private-key-file={self.pki['key']}",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.pki['sa_pub']}",
                f"--service-account-signing-key-file={self.pki['sa_key']}",
                # Admission as in a hardened cluster: setting an owner reference with
                # blockOwnerDeletion needs `update` on the owner's finalizers (the chart's
                # RBAC grants it). The defaults (ServiceAccount, NamespaceLifecycle,
                # PodSecurity, ...) need no kubelet.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_for(
            lambda: etcd.check_alive() and apiserver.check_alive() and self._readyz(),
            timeout=90,
            what="kube-apiserver /readyz",
            on_timeout=self.dump,
        )
        self.timings["apiserver"] = time.monotonic() - t0
        cm_kubeconfig = self.dir / "controller-manager.kubeconfig"
        cm_kubeconfig.write_text(
            kubeconfig(self.server, self.pki["ca"], "admin", self.admin_token)
        )
        self._spawn(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                # Everything but what needs a cloud (skipped without one anyway) and the
                # token-cleaner / bootstrap-signer (off by default).
                (
                    "--controllers=*,-cloud-node-lifecycle-controller,"
                    "-service-lb-controller,-node-route-controller"
                ),
                f"--service-account-private-key-file={self.pki['sa_key']}",
                f"--root-ca-file={self.pki['ca']}",
                "--use-service-account-credentials",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--concurrent-gc-syncs=5",
                "--v=1",
            ],
        )
        kwok_config = self.dir / "kwok.yaml"
        kwok_config.write_text(
            "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n"
        )
        self.kwok = self._spawn(
            "kwok",
            [
                str(BIN / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={kwok_config}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.1/24",
                "--node-ip=10.0.0.10",
            ],
        )
        self.create_node()
        wait_for(
            lambda: self.check_alive() and self._default_service_account(),
            timeout=60,
            what="the default ServiceAccount (kube-controller-manager running)",
            on_timeout=self.dump,
        )
        wait_for(
            lambda: self.check_alive() and self._node_ready(),
            timeout=60,
            what=f"node {NODE} Ready (kwok running)",
            on_timeout=self.dump,
        )
        self._binder = threading.Thread(
            target=self._bind_loop, name="binder", daemon=True
        )
        self._binder.start()
        self.timings["control plane"] = time.monotonic() - t0

    def stop(self) -> None:
        self._stop_binder.set()
        if self._binder:
            self._binder.join(5)
        for process in reversed(self.processes):
            process.stop()

    def check_alive(self) -> bool:
        return all(process.check_alive() for process in self.processes)

    def dump(self, lines: int = 30) -> str:
        """The last lines of every component's log."""
        return "\n".join(p.tail(lines) for p in self.processes)

    # -- the REST client --

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.pki["ca"]))
        return self._ssl

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Any:
        """One API call as the admin; the decoded JSON answer, None for 404."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.admin_token}",
                "Accept": "application/json",
                "Content-Type": content_type,
            },
        )
        try:
            with urllib.request.urlopen(
                req, context=self._context(), timeout=timeout
            ) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise AssertionError(
                f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}"
            ) from None
        return json.loads(payload) if payload else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def _readyz(self) -> bool:
        try:
            req = urllib.request.Request(
                self.server + "/readyz",
                headers={"Authorization": f"Bearer {self.admin_token}"},
            )
            with urllib.request.urlopen(
                req, context=self._context(), timeout=5
            ) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _default_service_account(self) -> bool:
        return (
            self.get("/api/v1/namespaces/default/serviceaccounts/default") is not None
        )

    def _node_ready(self) -> bool:
        node = self.get(f"/api/v1/nodes/{NODE}") or {}
        conditions = node.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def create_node(self) -> None:
        self.request(
            "POST",
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": NODE,
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": NODE_LABELS,
                },
                "spec": {},
                "status": {
                    "allocatable": {
                        "cpu": "64",
                        "memory": "256Gi",
                        "pods": "1000",
                        "nvidia.com/gpu": "8",
                    },
                    "capacity": {
                        "cpu": "64",
                        "memory": "256Gi",
                        "pods": "1000",
                        "nvidia.com/gpu": "8",
                    },
                },
            },
        )

    # -- the binder (instead of kube-scheduler) --

    def _bind_pending(self) -> None:
        selector = urllib.parse.quote("spec.nodeName=,status.phase=Pending")
        pods = self.get(f"/api/v1/pods?fieldSelector={selector}") or {"items": []}
        for pod in pods["items"]:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            wanted = pod["spec"].get("nodeSelector") or {}
            if any(NODE_LABELS.get(k) != v for k, v in wanted.items()):
                continue  # unschedulable here, as a scheduler would leave it
            namespace, name = meta["namespace"], meta["name"]
            try:
                self.request(
                    "POST",
                    f"/api/v1/namespaces/{namespace}/pods/{name}/binding",
                    {
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": name, "namespace": namespace},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
                    },
                )
                self.bound.add(f"{namespace}/{name}")
            except AssertionError:
                pass  # deleted or bound meanwhile: the next round sees

    def _bind_loop(self) -> None:
        while not self._stop_binder.wait(0.5):
            # The API server may be stopping, or busy: the next round tries again.
            with contextlib.suppress(Exception):
                self._bind_pending()

    # -- kubectl, helm and objects --

    def run(
        self,
        args: list[str],
        input: str | None = None,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            args,
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
            cwd=ROOT,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl ARGS` as the admin (or with `kubeconfig`)."""
        config = ["--kubeconfig", str(kubeconfig or self.kubeconfig)]
        return self.run(
            [str(BIN / "kubectl"), *config, *args], input=input, check=check
        )

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            [str(BIN / "helm"), "--kubeconfig", str(self.kubeconfig), *args]
        )

    def apply(
        self,
        manifests: str | Path | Iterable[dict[str, Any]],
        namespace: str | None = None,
    ) -> str:
        """`kubectl apply` (server-side) of YAML text, a file or objects; the output."""
        if isinstance(manifests, Path):
            text = manifests.read_text()
        elif isinstance(manifests, str):
            text = manifests
        else:
            text = yaml.safe_dump_all(list(manifests))
        args = ["apply", "--server-side", "--field-manager=asya-tests", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        return self.kubectl(*args, input=text).stdout

    def create_namespace(self, name: str) -> None:
        if self.get(f"/api/v1/namespaces/{name}") is None:
            self.request(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )

    def service_account_kubeconfig(self, name: str, namespace: str, path: Path) -> Path:
        """A kubeconfig authenticated as a ServiceAccount (a TokenRequest token)."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, "--duration=2h"
        ).stdout.strip()
        user = f"system:serviceaccount:{namespace}:{name}"
        path.write_text(kubeconfig(self.server, self.pki["ca"], user, token))
        return path


# --- NATS ---------------------------------------------------------------------------------


class Nats:
    """A real nats-server with JetStream; `consumers(stream)` reads its monitoring endpoint."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port, self.monitor = free_port(), free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.monitoring = f"127.0.0.1:{self.monitor}"
        self.process = Process(
            "nats-server",
            [
                str(NATS_SERVER),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor),
                "-js",
                "-sd",
                str(directory / "jetstream"),
            ],
            directory / "nats-server.log",
        )
        wait_for(
            lambda: self.process.check_alive() and self._healthy(),
            timeout=20,
            what="nats-server /healthz",
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{self.monitoring}/healthz", timeout=2
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def streams(self) -> dict[str, list[str]]:
        """Every stream's consumers, by stream name."""
        url = f"http://{self.monitoring}/jsz?streams=true&consumers=true"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.load(resp)
        out: dict[str, list[str]] = {}
        for account in data.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                out[stream["name"]] = [
                    c["name"] for c in stream.get("consumer_detail") or []
                ]
        return out

    def consumers(self, stream: str) -> list[str]:
        return self.streams().get(stream, [])

    def stop(self) -> None:
        self.process.stop()


# --- the operator -------------------------------------------------------------------------


class Operator:
    """A real `asya-operator run` with `kubeconfig` (the chart's ServiceAccount), serving
    /healthz, /readyz and /metrics on a free port."""

    def __init__(
        self,
        directory: Path,
        kubeconfig: Path,
        settings: list[str],
        holder: str,
        lease_name: str = "asya-operator",
        lease_namespace: str = "asya-system",
        lease_seconds: int = 6,
    ) -> None:
        self.holder = holder
        self.http = f"127.0.0.1:{free_port()}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(directory),
            "KUBECONFIG": str(kubeconfig),
            "ASYA_LOG": "info,kube_leader_election=warn,asya_operator=debug",
            "NO_COLOR": "1",
        }
        self.process = Process(
            f"asya-operator ({holder})",
            [
                str(OPERATOR),
                "run",
                *settings,
                "--http",
                self.http,
                "--lease-name",
                lease_name,
                "--lease-namespace",
                lease_namespace,
                "--holder",
                holder,
                "--lease-seconds",
                str(lease_seconds),
            ],
            directory / f"operator-{holder}.log",
            env=env,
        )

    def metrics(self) -> dict[str, float]:
        """/metrics as {series: value} (series with their labels, as written)."""
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                out[series] = float(value)
        return out

    def leading(self) -> bool:
        return self.metrics().get("asya_operator_leader") == 1

    def reconciliations(self) -> float:
        m = self.metrics()
        return sum(
            v
            for k, v in m.items()
            if k.startswith("asya_operator_reconciliations_total")
        )

    def alive(self) -> bool:
        return self.process.alive()

    def log(self, lines: int = 60) -> str:
        return self.process.tail(lines)

    def stop(self) -> None:
        self.process.stop()


# --- actors -------------------------------------------------------------------------------

#: REST paths of the kinds the operator applies, by kind.
PATHS = {
    "AsyncActor": "/apis/asya.sh/v1alpha1/namespaces/{ns}/asyncactors/{name}",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "ScaledObject": "/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/{name}",
    "TriggerAuthentication": "/apis/keda.sh/v1alpha1/namespaces/{ns}/triggerauthentications/{name}",
}


def path_of(kind: str, namespace: str, name: str) -> str:
    return PATHS[kind].format(ns=namespace, name=name)


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An object's status conditions, by type."""
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def wait_for_actor(
    cluster: Cluster,
    namespace: str,
    name: str,
    phases: Iterable[str] = ("Ready", "ScaledToZero"),
    timeout: float = 60,
    on_timeout: Callable[[], str] | None = None,
) -> dict[str, Any]:
    """The actor once its status is of its current generation and in one of `phases`."""
    wanted = set(phases)

    def settled() -> dict[str, Any] | None:
        actor = cluster.get(path_of("AsyncActor", namespace, name))
        if not actor:
            return None
        status = actor.get("status") or {}
        current = status.get("observedGeneration") == actor["metadata"].get(
            "generation"
        )
        return actor if current and status.get("phase") in wanted else None

    def report() -> str:
        actor = cluster.get(path_of("AsyncActor", namespace, name))
        extra = on_timeout() if on_timeout else ""
        return f"actor: {json.dumps((actor or {}).get('status'), indent=1)}\n{extra}"

    return wait_for(
        settled,
        timeout,
        f"AsyncActor {namespace}/{name} in phase {sorted(wanted)}",
        on_timeout=report,
    )


def wait_gone(cluster: Cluster, path: str, timeout: float = 60) -> None:
    wait_for(lambda: cluster.get(path) is None, timeout, f"{path} to be deleted")


def subset_mismatches(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where `actual` differs from `expected`, reading `expected` as a subset: maps may have
    more keys in `actual` (defaults the API server filled in), lists match element-wise."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected a map, got {actual!r}"]
        out = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{where}.{key}: missing (expected {value!r})")
            else:
                out += subset_mismatches(value, actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {expected!r}, got {actual!r}"]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            out += subset_mismatches(e, a, f"{where}[{i}]")
        return out
    if expected != actual and str(expected) != str(actual):
        return [f"{where}: expected {expected!r}, got {actual!r}"]
    return []


def pods_of(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    query = urllib.parse.quote(selector)
    return list(
        (
            cluster.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={query}")
            or {}
        )["items"]
    )


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready = conditions(pod).get("Ready", {}).get("status") == "True"
    return bool(status.get("phase") == "Running" and ready)


def printer_rows(text: str) -> list[dict[str, str]]:
    """`kubectl get` table output as rows by column header (columns split on 2+ spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [
        i
        for i, ch in enumerate(header)
        if ch != " " and (i == 0 or header[i - 1] == " ")
    ]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = []
        for n, start in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else len(line)
            cells.append(line[start:end].strip())
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


def render(
    files: Iterable[Path],
    settings: Iterable[str] = (),
    namespace: str | None = None,
    owner_uid: str | None = None,
) -> list[dict[str, Any]]:
    """`asya-operator render`: the objects the operator applies for these files."""
    args = [str(OPERATOR), "render", *settings]
    for file in files:
        args += ["-f", str(file)]
    if namespace:
        args += ["--namespace", namespace]
    if owner_uid:
        args += ["--owner-uid", owner_uid]
    result = subprocess.run(
        args, check=False, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr}")
    return documents(result.stdout)
