#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting and lints, Rust unit and integration tests
# (real componentize-py builds run by the real host), a short fuzz run, the Python tests (SDK
# with the end-to-end `asya dev` runs, operator, gateway, the cluster on a real control plane,
# images) and short runs of the newest benchmarks (all of them: scripts/bench.sh).
#
# CI gives it 90 minutes on 2 cores. Two CPU-heavy jobs that nothing needs early run in the
# background at a lower priority, so they take the CPU the main line leaves idle (the Rust
# build's single-crate stretches, tests waiting on brokers and timeouts) instead of slowing it:
# the control plane's Go build (needed by tests/cluster) and clippy (in its own target dir, so
# it never holds the build lock the tests need). Each phase prints its time; a table at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# Release-profile incremental caches take tens of GiB across the workspace's test binaries; a
# one-shot CI build gains nothing from them and has run out of disk with them. Local edit-build
# loops keep them (the profile's default) unless this script runs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

started=$(date +%s)
phase_name=
phase_started=
timings=()
phase() { # ends the running phase (if any) and starts the named one
  local now
  now=$(date +%s)
  if [ -n "$phase_name" ]; then
    timings+=("$(printf '%6d s  %s' $((now - phase_started)) "$phase_name")")
    echo "== $phase_name: $((now - phase_started)) s (suite at $((now - started)) s)"
  fi
  phase_name=$1
  phase_started=$now
  if [ -n "$phase_name" ]; then echo "== $phase_name"; fi
}
background=()
summary() {
  local rc=$?
  phase ""
  for pid in "${background[@]}"; do kill "$pid" 2>/dev/null || true; done
  echo "== timings (suite: $(($(date +%s) - started)) s, exit $rc)"
  printf '%s\n' "${timings[@]}"
}
trap summary EXIT

echo "== disk before the build: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"
mkdir -p .cache
# tests/cluster's control plane, built from the Go module proxy: ~17 min of CPU fresh on 2 cores
# (kube-apiserver + kube-controller-manager + kubectl ~12, kwok 2.5, helm 1.5, etcd 1.5), 1 s
# cached.
nice -n 10 scripts/control-plane.sh >.cache/control-plane.log 2>&1 &
control_plane=$!
background+=("$control_plane")

phase "setup (apt, pip, npm, the workspace's release build)"
scripts/setup.sh

phase "lint"
cargo fmt --all -- --check
.venv/bin/ruff check sdk-python tests host/benches examples
.venv/bin/ruff format --check sdk-python tests host/benches examples
.venv/bin/python -m mypy --config-file sdk-python/pyproject.toml sdk-python/src
# The build above and the tests below must share every compiled dependency (host/Cargo.toml).
scripts/feature-pins.sh
clippy=
if cargo clippy --version >/dev/null 2>&1; then
  CARGO_TARGET_DIR=target/clippy nice -n 19 \
    cargo clippy --release --locked --workspace --all-targets -- -D warnings \
    >.cache/clippy.log 2>&1 &
  clippy=$!
  background+=("$clippy")
else
  echo "clippy is not installed for this toolchain (rustup component add clippy): lint step NOT RUN" >&2
fi

phase "rust tests"
cargo test --release --locked --workspace

phase "fuzz (short; long runs that keep what they find: scripts/fuzz.sh 600 --keep)"
scripts/fuzz.sh 15

phase "python tests"
.venv/bin/python -m pytest -q sdk-python/tests
.venv/bin/python -m pytest -q tests/operator
.venv/bin/python -m pytest -q tests/gateway

phase "waiting for the control plane (building in the background since the start)"
if ! wait "$control_plane"; then
  tail -40 .cache/control-plane.log >&2
  echo "building the control plane failed (log above: .cache/control-plane.log)" >&2
  exit 1
fi
grep '^control plane' .cache/control-plane.log || true

phase "cluster tests"
.venv/bin/python -m pytest -q tests/cluster

phase "image tests"
.venv/bin/python -m pytest -q tests/images

phase "benchmarks (short runs of the newest; every bench: scripts/bench.sh)"
scripts/bench.sh pool_density gateway_load

if [ -n "$clippy" ]; then
  phase "waiting for clippy (running in the background since the lint phase)"
  if ! wait "$clippy"; then
    tail -60 .cache/clippy.log >&2
    echo "clippy found problems (log above: .cache/clippy.log)" >&2
    exit 1
  fi
  tail -1 .cache/clippy.log
fi
