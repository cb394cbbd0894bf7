#!/usr/bin/env bash
# The GPU check: the test suite with CUDA visible (tests parametrized on "cuda" run, `auto` devices pick the GPU;
# GPU_CHECK_TESTS="tests/test_families.py ..." runs fewer),
# then the throughput benchmark on random-weight models shaped like Qwen2.5 0.5B, 1.5B and 7B (no download):
# load time, ingest tokens/s vs the plain forward pass, time to first token at 16K/256K/1M tokens of memory,
# bytes per token, peak GPU memory. Writes bench/results/throughput_cuda.{json,png} (L2M_GPU_OUT to change).
# Without a CUDA device it says so and exits 0: nothing to check. Extra arguments go to the benchmark
# (e.g. --shapes 0.5B --sizes 16,256). Needs about 60 GB of disk for the 7B shape's 1M-token store.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || bash scripts/setup.sh || exit 1

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  "$PY" -c 'import torch; print(f"gpu_check: skipped: no CUDA device visible to torch {torch.__version__}", "(a CPU-only build; on a GPU machine install the pinned torch from PyPI, a CUDA build on Linux)" if torch.version.cuda is None else "")'
  exit 0
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(), "torch", torch.__version__)'

out=${L2M_GPU_OUT:-bench/results}
mkdir -p "$out"
# shellcheck disable=SC2086  # GPU_CHECK_TESTS holds pytest arguments
"$PY" -m pytest -q ${GPU_CHECK_TESTS:-tests} 2>&1 | tee "$out/gpu_tests.log"
tests=${PIPESTATUS[0]}
"$PY" -m bench.bench_throughput --device cuda --out "$out/throughput_cuda.json" "$@"
bench=$?
echo "gpu_check: tests exit $tests, benchmark exit $bench ($out/throughput_cuda.json)"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
