#!/usr/bin/env bash
# Fuzzes the parsers of the shared AsyncActor contract (fuzz/: manifest, duration, quantity) and
# the host's message logic (envelope, route_check, fanin_header) with
# cargo fuzz (libFuzzer, nightly Rust). The corpus in fuzz/corpus/<target> is the seed set and
# grows with what the run finds; a crash is saved under fuzz/artifacts/<target> and fails the run.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [--keep]   (default 180; scripts/test.sh runs 15)
# With --keep, inputs that reach new code are added to fuzz/corpus/<target> (commit them);
# without it they go to a temporary directory and the repository's corpus is only read.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-180}"
keep="${2:-}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: installing the nightly toolchain (cargo fuzz needs it)" >&2
  if ! rustup toolchain install nightly --profile minimal >&2; then
    echo "fuzz: NOT RUN: no nightly Rust toolchain can be installed here" >&2
    exit 1
  fi
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked --quiet
fi

for target in manifest duration quantity envelope route_check fanin_header; do
  echo "== fuzz $target (${seconds}s)"
  mkdir -p "fuzz/corpus/$target"
  log="$(mktemp)"
  # libFuzzer adds new inputs to the first corpus directory it is given.
  if [ "$keep" = "--keep" ]; then new="fuzz/corpus/$target"; else new="$(mktemp -d)"; fi
  if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$new" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    if grep -q "failed to build fuzz script" "$log"; then
      echo "fuzz: the $target target did not build" >&2
    else
      echo "fuzz: $target found a crash (saved under fuzz/artifacts/$target)" >&2
    fi
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)|^Done " "$log" || tail -3 "$log"
  rm -f "$log"
  if [ "$keep" != "--keep" ]; then rm -rf "$new"; fi
done
