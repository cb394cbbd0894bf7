"""The GPU check script skips cleanly without CUDA, and its benchmark's plumbing works on the CPU ("ci" shape)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.bench_throughput import measure_shape, synthetic_documents

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the run without CUDA")
def test_gpu_check_skips_cleanly_without_cuda(tmp_path):
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, "L2M_GPU_OUT": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu_check: skipped: no CUDA device") and not list(tmp_path.iterdir())


def test_benchmark_measures_a_shape_on_the_cpu(tmp_path):
    result = measure_shape("ci", torch.device("cpu"), torch.float32, 2048, [2, 4], tmp_path)
    assert result["ingest"]["tokens"] == 2048 and result["ingest"]["l2m_tokens_per_s"] > 0
    assert {k: v["tokens"] for k, v in result["first_token_s"].items()} == {"2K": 2048, "4K": 4096}
    assert result["kv_bytes_per_token"]["fp16"] == 2 * 2 * 2 * 32 * 2
    assert 0 < result["kv_bytes_per_token"]["int8_stored"] < result["kv_bytes_per_token"]["fp16"]
    assert not (tmp_path / "ci").exists()  # the model and stores are removed after measuring


def test_synthetic_documents_have_the_asked_tokens():
    docs = synthetic_documents(5000)
    assert sum(map(len, docs)) == 5000 and all(len(d) == 2048 for d in docs[:-1])
