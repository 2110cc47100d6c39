#!/usr/bin/env bash
# Checks that `cargo build --workspace --bins` and `cargo test --workspace` resolve every shared
# dependency with the same features (the feature pins in host/Cargo.toml). When they differ, the
# test build compiles those crates (and everything above them: wasmtime, k8s-openapi, ...) a
# second time. Prints the differing lines and exits 1; add the features they name to the pins.
set -euo pipefail
cd "$(dirname "$0")/.."
tree() { cargo tree --locked --workspace -e "$1" -f '{p} [{f}]' --prefix none | sed 's/ (\*)$//' | sort -u; }
without_dev=$(mktemp)
with_dev=$(mktemp)
trap 'rm -f "$without_dev" "$with_dev"' EXIT
tree normal,build >"$without_dev"
tree normal,build,dev >"$with_dev"
# Crates only the dev graph has are fine; a crate both graphs have must have one feature set.
differing=$(diff "$without_dev" "$with_dev" | sed -n 's/^< //p' || true)
if [ -n "$differing" ]; then
  echo "feature pins: these crates get other features under cargo test (host/Cargo.toml pins):" >&2
  diff "$without_dev" "$with_dev" | grep -F -f <(echo "$differing" | awk '{print $1" "$2}') >&2 || true
  exit 1
fi
echo "feature pins: bins and tests resolve shared dependencies alike"
