#!/usr/bin/env bash
# Every benchmark, in a short run: each prints its targets (MET / NOT MET) and ratios against
# its baseline from the same run. Full runs, with the README's figures: drop the environment
# values (e.g. `cargo bench -p asya-host --bench nats_pipeline`). The long soak is not here:
# `cargo bench -p asya-host --bench soak`; the density bench compiles N distinct components:
# `DENSITY_ACTORS=8 cargo bench -p asya-host --bench density`.
#
# Usage: scripts/bench.sh [NAME...]   (default: all of them)
# scripts/test.sh runs only the benchmarks of the newest work (pool_density, gateway_load):
# each bench is its own release binary, ~1 minute of CPU to build on top of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# --workspace keeps the dependency features of the workspace build, so nothing is rebuilt.
bench() { # name, then VAR=value settings
  local name=$1
  shift
  echo "== bench $name (short run)"
  env "$@" cargo bench --locked --workspace --bench "$name"
}
short() {
  case "$1" in
    pipeline) bench pipeline BENCH_MESSAGES=5000 ;;
    nats_pipeline) bench nats_pipeline BENCH_MESSAGES=2000 ;;
    transports) bench transports BENCH_ROUNDS=1 BENCH_MESSAGES=1000 BENCH_SQS_MESSAGES=100 ;;
    runtimes) bench runtimes BENCH_MESSAGES=1000 ;;
    async_calls) bench async_calls BENCH_ROUNDS=2 ;;
    flow) bench flow BENCH_MESSAGES=1000 ;;
    gateway_load) bench gateway_load BENCH_ROUNDS=1 BENCH_TASKS=300 BENCH_SUBSCRIBERS=20 ;;
    oci_start) bench oci_start ;;
    cold_start) bench cold_start BENCH_ROUNDS=10 ;;
    pool_density) bench pool_density POOL_ACTORS=100 POOL_NAMESPACES=10 POOL_SAMPLED=50 POOL_ADDED=50 ;;
    *) echo "bench.sh: unknown bench '$1'" >&2; exit 2 ;;
  esac
}

if [ $# = 0 ]; then
  set -- pipeline nats_pipeline transports runtimes async_calls flow gateway_load oci_start \
    cold_start pool_density
fi
for name in "$@"; do short "$name"; done
