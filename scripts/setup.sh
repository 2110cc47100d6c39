#!/usr/bin/env bash
# Installs everything asya needs on a fresh machine (idempotent): the Python SDK and CLI with
# componentize-py in .venv, and the Rust host built once in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

# A real OCI registry for the component push/pull tests (Debian's docker-registry).
if ! command -v docker-registry >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
  else
    echo "docker-registry is missing: install it (apt-get install docker-registry) for the OCI tests" >&2
  fi
fi

# Graphviz renders `asya flow compile --plot` diagrams (flow.dot -> SVG/PNG).
if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
  else
    echo "graphviz is missing: install it (apt-get install graphviz) for flow plots" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e 'sdk-python[dev]'
# The operator's validation tests (tests/operator): Kubernetes schemas offline, Helm as a library.
.venv/bin/python -m pip install --quiet 'kubernetes-validate>=1.33' 'helm-python-sdk>=0.2.2' \
  'jsonschema>=4.20' 'PyYAML>=6'

# One build of the whole workspace: the same feature set `cargo test --workspace` uses, so the
# tests reuse every compiled dependency instead of building some twice.
cargo build --release --locked --workspace --bins
