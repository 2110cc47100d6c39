"""Fixtures of the cluster tests: one real control plane per session (`cluster`), the chart
installed into it with the real helm (`chart`), a real nats-server (`nats`) and real
`asya-operator run` processes authenticated as the chart's ServiceAccount (`operators`,
`operator`). Helpers are in cluster.py.

The binaries come from `scripts/control-plane.sh` (and `scripts/setup.sh` for the operator and
nats-server); without them every test fails, saying what to run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import (
    CHART,
    KEDA_CRDS,
    Cluster,
    Nats,
    Operator,
    missing_binaries,
    wait_for,
)

#: The chart's release, namespace and ServiceAccount (the release's full name).
RELEASE = "asya"
SYSTEM = "asya-system"
SERVICE_ACCOUNT = "asya"
LEASE = "asya-operator"
#: Short leases for a quick hand-over; not shorter: on a busy 2-core machine a renewal
#: round (T/3) must answer within T/3.
LEASE_SECONDS = 6

_active: list[object] = []
_failures: list[str] = []


#: Module order: kube-controller-manager's garbage collector learns new resources (the chart's
#: CRDs) at its discovery sync, every 30 s; the deletion test runs after the others, which
#: mostly hides that wait. The leader test, which kills the leading operator, runs last.
ORDER = [
    "test_chart",
    "test_examples",
    "test_flavors",
    "test_pools",
    "test_deletion",
    "test_leader",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.path.stem
        return ORDER.index(module) if module in ORDER else len(ORDER)

    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    """A failed test's report gets the last lines of every component's and operator's log."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        _failures.append(item.nodeid)
        if len(_failures) > 3:
            return  # the logs are in the directories the first reports name
        for thing in _active:
            dump = getattr(thing, "dump", None)
            if dump:
                report.sections.append((f"logs ({type(thing).__name__})", dump()))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = missing_binaries()
    if missing:
        pytest.fail(
            "the cluster tests need a built control plane, operator and nats-server; missing:\n  "
            + "\n  ".join(missing)
            + "\nrun scripts/control-plane.sh (and scripts/setup.sh)",
            pytrace=False,
        )
    directory = Path(
        os.environ.get("ASYA_CLUSTER_DIR") or tmp_path_factory.mktemp("cluster")
    )
    control_plane = Cluster(directory)
    _active.append(control_plane)
    try:
        control_plane.start()
        print(f"control plane up: {control_plane.timings}")
        yield control_plane
    finally:
        control_plane.stop()
        _active.remove(control_plane)


@pytest.fixture(scope="session")
def chart(cluster: Cluster) -> dict[str, str]:
    """KEDA's CRDs (the operator applies ScaledObjects) and `helm install asya charts/asya`."""
    t0 = time.monotonic()
    cluster.kubectl("apply", "--server-side", "-f", str(KEDA_CRDS))
    cluster.helm("install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace")
    cluster.timings["chart"] = time.monotonic() - t0
    return {"release": RELEASE, "namespace": SYSTEM, "service_account": SERVICE_ACCOUNT}


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    server = Nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def operator_settings(nats: Nats) -> list[str]:
    """The settings flags of the operator; `asya-operator render` gets the same ones."""
    return ["--nats-url", nats.url, "--nats-monitoring", nats.monitoring]


class Operators:
    """The operator processes of the session: all candidates for one Lease (as the chart's
    replicas are), as the chart's ServiceAccount."""

    def __init__(
        self, cluster: Cluster, directory: Path, kubeconfig: Path, settings: list[str]
    ) -> None:
        self.cluster = cluster
        self.dir = directory
        self.kubeconfig = kubeconfig
        self.settings = settings
        self.started: list[Operator] = []
        self.count = 0

    def start(self, holder: str | None = None) -> Operator:
        self.count += 1
        operator = Operator(
            self.dir,
            self.kubeconfig,
            self.settings,
            holder or f"operator-{self.count}",
            lease_name=LEASE,
            lease_namespace=SYSTEM,
            lease_seconds=LEASE_SECONDS,
        )
        self.started.append(operator)
        return operator

    def lease_holder(self) -> str | None:
        lease = self.cluster.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/{LEASE}"
        )
        return (lease or {}).get("spec", {}).get("holderIdentity")

    def leader(self, timeout: float = 4 * LEASE_SECONDS + 10) -> Operator:
        """The live operator that leads; one is started if none is alive."""
        if not any(o.alive() for o in self.started):
            self.start()

        def leading() -> Operator | None:
            for operator in self.started:
                if operator.alive() and operator.leading():
                    return operator
            return None

        return wait_for(leading, timeout, "an operator to lead", on_timeout=self.dump)

    def dump(self) -> str:
        return "\n".join(o.log(40) for o in self.started)

    def stop(self) -> None:
        for operator in self.started:
            operator.stop()


@pytest.fixture(scope="session")
def operators(
    cluster: Cluster,
    chart: dict[str, str],
    operator_settings: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operators]:
    directory = tmp_path_factory.mktemp("operators")
    kubeconfig = cluster.service_account_kubeconfig(
        chart["service_account"], chart["namespace"], directory / "operator.kubeconfig"
    )
    pool = Operators(cluster, directory, kubeconfig, operator_settings)
    _active.append(pool)
    try:
        yield pool
    finally:
        pool.stop()
        _active.remove(pool)


@pytest.fixture
def operator(operators: Operators) -> Operator:
    """The leading operator (one is started if none runs)."""
    return operators.leader()
