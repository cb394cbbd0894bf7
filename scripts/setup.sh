#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv, the package with its dev tools, the default model.
# A second run reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
      PY=$candidate; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: Python 3.11 or newer is needed (set PYTHON=...)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.l2m-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing l2m and its dependencies into .venv (CPU build of torch) ..." >&2
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"; then
    echo "error: installation failed (see pip's output above)" >&2; exit 1
  fi
  echo "$want" > "$stamp"
fi
.venv/bin/l2m model pull
