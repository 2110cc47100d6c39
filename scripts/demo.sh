#!/usr/bin/env bash
# The main job: build the example text pipeline's handlers into WASM components and run
# preprocess → classify → judge (→ refine → judge) → postprocess in one local host.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/asya dev examples/text-pipeline --payload "${1:-{\"text\": \"Hello World\"}}"
