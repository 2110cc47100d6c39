#!/usr/bin/env bash
# Installs everything asya needs on a fresh machine (idempotent): the Python SDK and CLI with
# componentize-py in .venv, and the Rust host built once in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e 'sdk-python[dev]'

cargo build --release --locked -p asya-host --bin asya-host
