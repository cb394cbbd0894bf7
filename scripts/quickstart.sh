#!/usr/bin/env bash
# Set-up from scratch, then the main job on the embedded default model: ingest this repository's docs
# into memory and answer a question from it, with the file lines the model read.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
l2m ingest docs README.md --store .l2m-demo
l2m ask --store .l2m-demo "${1:-What does the hot tier hold?}"
