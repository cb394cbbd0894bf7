"""Half precision: the automatic dtype choice, and a Qwen2-shaped random model (the "ci" shape: the 7B
shape's code path, small) loaded in bf16, reading memory in bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from l2m_core import cpu_dtype, loading
from l2m_core.errors import L2MError
from l2m_core.loading import load_model, resolve_dtype
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings
from l2m_core.shapes import SHAPES, kv_bytes_per_token, parameters, save_random_model, shaped_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def shaped_dir(tmp_path_factory):
    return save_random_model("ci", tmp_path_factory.mktemp("ci-shape"))


def test_auto_on_cpu_is_the_measured_dtype_unless_the_weights_would_not_fit(shaped_dir, monkeypatch):
    monkeypatch.delenv(loading.DTYPE_ENV, raising=False)
    monkeypatch.setattr(cpu_dtype, "fastest", lambda: torch.float32)
    assert resolve_dtype("auto", CPU, shaped_dir) == torch.float32
    fp32 = 4 * parameters(shaped_config("ci"))
    monkeypatch.setattr(loading, "_memory_bytes", lambda: fp32)  # half the memory is less than the weights
    assert resolve_dtype("auto", CPU, shaped_dir) == torch.bfloat16
    assert load_model(shaped_dir, device="cpu").model.dtype == torch.bfloat16


@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_is_half_precision_on_cuda(bf16, expected, monkeypatch):
    monkeypatch.delenv(loading.DTYPE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_dtype("auto", CUDA) == expected


def test_l2m_dtype_overrides_auto_and_a_bad_one_is_one_line(monkeypatch):
    monkeypatch.setenv(loading.DTYPE_ENV, "float16")
    assert resolve_dtype("auto", CPU) == torch.float16
    assert resolve_dtype("float32", CPU) == torch.float32  # an explicit dtype wins
    monkeypatch.setenv(loading.DTYPE_ENV, "fp8")
    with pytest.raises(L2MError, match="unknown dtype 'fp8'") as err:
        resolve_dtype("auto", CPU)
    assert "\n" not in str(err.value)


def test_shaped_model_loads_in_bf16_and_reads_memory(shaped_dir, tmp_path):
    lm = load_model(shaped_dir, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    assert lm.fingerprint == load_model(shaped_dir, device="cpu", dtype="float32").fingerprint
    mem = Memory.create(tmp_path / "s", lm, MemorySettings(block_size=16, chunk_size=32, hot_budget_mb=4))
    spans = mem.ingest_document("The blue lamp is in the hall.\n" * 12, "lamps.txt")
    answer = mem.ask("Where is the blue lamp?", max_new_tokens=2)
    assert answer.citations and answer.citations[0].source == "lamps.txt"
    keys, values = mem.hot.get((spans[0].block_id, 0))
    assert keys.dtype == values.dtype == torch.bfloat16


def test_bytes_per_token_of_the_shapes():
    """The README's table: layers * 2 * kv_heads * head_dim numbers per token."""
    assert kv_bytes_per_token(shaped_config("7B"), 2) == 28 * 2 * 4 * 128 * 2 == 57344
    assert kv_bytes_per_token(shaped_config("0.5B"), 2) == 24 * 2 * 2 * 64 * 2
    assert set(SHAPES) >= {"0.5B", "1.5B", "7B"}


@pytest.mark.model
def test_default_gguf_is_dequantized_straight_to_bf16(default_model, tmp_path):
    """A bf16 conversion is written in bf16 (half the fp32 cache's bytes), not converted from fp32 after."""
    from safetensors import safe_open

    from l2m_core import provision

    fp32 = loading._cached_conversion(provision.default_gguf_path(), tmp_path / "hf", torch.float32)
    bf16 = loading._cached_conversion(provision.default_gguf_path(), tmp_path / "hf", torch.bfloat16)
    assert bf16 == fp32  # a float32 conversion serves every dtype
    fresh = loading._cached_conversion(provision.default_gguf_path(), tmp_path / "only" / "hf", torch.bfloat16)
    assert fresh.name == "hf-bfloat16"
    size = lambda d: sum(p.stat().st_size for p in d.glob("*.safetensors"))  # noqa: E731
    assert abs(size(fresh) / size(fp32) - 0.5) < 0.01
    with safe_open(str(next(fresh.glob("*.safetensors"))), "pt") as weights:
        assert weights.get_tensor(next(iter(weights.keys()))).dtype == torch.bfloat16


def _convert(gguf: str, cache: str) -> str:
    return str(loading._cached_conversion(Path(gguf), Path(cache), torch.bfloat16))


@pytest.mark.model
def test_two_first_runs_at_once_both_get_a_complete_conversion(default_model, tmp_path):
    """Two processes converting the default model into one empty cache at once (a batch's workers on a new
    machine) each return a complete conversion, and no half-written folder is left behind."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from l2m_core import provision

    gguf, cache = str(provision.default_gguf_path()), str(tmp_path / "hf")
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        made = list(pool.map(_convert, [gguf, gguf], [cache, cache]))
    assert made == [str(tmp_path / "hf-bfloat16")] * 2
    assert loading._complete(Path(made[0]))
    assert [p.name for p in tmp_path.iterdir()] == ["hf-bfloat16"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_on_cuda_auto_loads_half_precision_and_the_hot_tier_is_on_the_gpu(shaped_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(loading.DTYPE_ENV, raising=False)
    lm = load_model(shaped_dir)  # device and dtype auto
    assert lm.device.type == "cuda" and lm.model.dtype in (torch.bfloat16, torch.float16)
    mem = Memory.create(tmp_path / "s", lm, MemorySettings(block_size=16, chunk_size=32, hot_budget_mb=4))
    spans = mem.ingest_document("The blue lamp is in the hall.\n" * 12, "lamps.txt")
    assert mem.ask("Where is the blue lamp?", max_new_tokens=2).citations
    keys, _ = mem.hot.get((spans[0].block_id, 0))
    assert keys.device.type == "cuda"


@pytest.mark.parametrize("fp32_s, bf16_s, chosen", [(0.010, 0.050, "float32"), (0.020, 0.010, "bfloat16"),
                                                    (0.011, 0.010, "float32")])  # bf16 must be clearly faster
def test_cpu_dtype_is_measured_once_per_machine_and_remembered(isolated_home, monkeypatch, fp32_s, bf16_s, chosen):
    calls = []

    def timed(dtype):
        calls.append(dtype)
        return fp32_s if dtype == torch.float32 else bf16_s

    monkeypatch.setattr(cpu_dtype, "seconds_per_chunk", timed)
    cpu_dtype.measured.cache_clear()
    assert cpu_dtype.fastest() == getattr(torch, chosen)
    assert len(calls) == 2
    cpu_dtype.measured.cache_clear()  # a new process: the file answers, nothing is timed again
    record = cpu_dtype.measured()
    assert len(calls) == 2 and record["chosen"] == chosen and record["machine"] == cpu_dtype.machine()
    (isolated_home / cpu_dtype.FILE).write_text("{not json")  # a damaged file is measured over
    cpu_dtype.measured.cache_clear()
    assert cpu_dtype.fastest() == getattr(torch, chosen) and len(calls) == 4
    cpu_dtype.measured.cache_clear()


def test_cpu_dtype_measures_both_candidates():
    assert all(cpu_dtype.seconds_per_chunk(getattr(torch, name), repeats=1) > 0 for name in cpu_dtype.CANDIDATES)
