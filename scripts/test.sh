#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting and lints, Rust unit and integration tests
# (real componentize-py builds run by the real host), the Python SDK's tests (including the
# end-to-end `asya dev` runs) and a short benchmark run.
set -euo pipefail
cd "$(dirname "$0")/.."
# Release-profile incremental caches take tens of GiB across the workspace's test binaries; a
# one-shot CI build gains nothing from them and has run out of disk with them. Local edit-build
# loops keep them (the profile's default) unless this script runs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk before the build: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"
# tests/cluster's control plane, built from the Go module proxy: ~17 min of CPU fresh on 2 cores
# (kube-apiserver + kube-controller-manager + kubectl ~12, kwok 2.5, helm 1.5, etcd 1.5), 1 s
# cached. It builds in the background beside the Rust build, filling the cores cargo leaves idle
# (its long single-crate compiles and links); the cluster tests wait for it.
mkdir -p .cache
scripts/control-plane.sh >.cache/control-plane.log 2>&1 &
control_plane=$!
trap 'kill "$control_plane" 2>/dev/null || true' EXIT
scripts/setup.sh

echo "== lint"
cargo fmt --all -- --check
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --release --locked --workspace --all-targets -- -D warnings
else
  echo "clippy is not installed for this toolchain (rustup component add clippy): lint step NOT RUN" >&2
fi
.venv/bin/ruff check sdk-python tests host/benches examples
.venv/bin/ruff format --check sdk-python tests host/benches examples
.venv/bin/python -m mypy --config-file sdk-python/pyproject.toml sdk-python/src

echo "== rust tests"
cargo test --release --locked --workspace

echo "== fuzz (short; long runs that keep what they find: scripts/fuzz.sh 600 --keep)"
scripts/fuzz.sh 15

echo "== python tests"
.venv/bin/python -m pytest -q sdk-python/tests
.venv/bin/python -m pytest -q tests/operator
.venv/bin/python -m pytest -q tests/gateway
echo "== the control plane (built in the background since the start)"
if ! wait "$control_plane"; then
  tail -40 .cache/control-plane.log >&2
  echo "building the control plane failed (log above: .cache/control-plane.log)" >&2
  exit 1
fi
grep '^control plane' .cache/control-plane.log || true
.venv/bin/python -m pytest -q tests/cluster
.venv/bin/python -m pytest -q tests/images

# --workspace keeps the dependency features of the workspace build above, so nothing is rebuilt.
echo "== benchmarks (short runs; full runs: cargo bench -p asya-host --bench NAME)"
BENCH_MESSAGES=5000 cargo bench --locked --workspace --bench pipeline
BENCH_MESSAGES=2000 cargo bench --locked --workspace --bench nats_pipeline
BENCH_ROUNDS=1 BENCH_MESSAGES=1000 BENCH_SQS_MESSAGES=100 cargo bench --locked --workspace --bench transports
BENCH_MESSAGES=1000 cargo bench --locked --workspace --bench runtimes
BENCH_ROUNDS=2 cargo bench --locked --workspace --bench async_calls
BENCH_MESSAGES=1000 cargo bench --locked --workspace --bench flow
BENCH_ROUNDS=1 BENCH_TASKS=300 BENCH_SUBSCRIBERS=20 cargo bench --locked --workspace --bench gateway_load
cargo bench --locked --workspace --bench oci_start
BENCH_ROUNDS=10 cargo bench --locked --workspace --bench cold_start
POOL_ACTORS=100 POOL_NAMESPACES=10 POOL_SAMPLED=50 POOL_ADDED=50 cargo bench --locked --workspace --bench pool_density
