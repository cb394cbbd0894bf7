#!/usr/bin/env bash
# Set-up from scratch plus the main job on the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/l2m model info
