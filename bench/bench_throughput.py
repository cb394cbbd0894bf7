"""Throughput on random-weight models shaped like Qwen2.5 0.5B, 1.5B and 7B (no download): load time, ingest
tokens/s against the plain forward pass, time to first token at 16K / 256K / 1M tokens of memory, bytes per
stored token, peak GPU memory. Made for a GPU (`bash scripts/gpu_check.sh` runs it); runs on a CPU too.

    python -m bench.bench_throughput --out bench/results/throughput_cuda.json
    python -m bench.bench_throughput --shapes ci --sizes 4,8 --ingest-tokens 4096 --device cpu   # a smoke run

The text is synthetic (random words; the byte tokenizer makes one token per byte), the weights random: answers
mean nothing, speed and memory are those of the shapes. Larger memories are the ingested store replicated
under new document names (bench_memory.replicate). The JSON is rewritten after every shape, so a run cut short
keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_memory import first_token_seconds, plain_forward_seconds, replicate
from l2m_core.loading import load_model, resolve_device, resolve_dtype
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings
from l2m_core.shapes import kv_bytes_per_token, parameters, save_random_model, shaped_config

WORDS = ("lamp river stone garden window letter market winter bridge silver orchard candle harbour meadow "
         "ledger compass lantern tower ribbon forest engine mirror valley archive signal").split()
DOC_TOKENS = 2048


def synthetic_documents(tokens: int, seed: int = 0) -> list[str]:
    """Documents of DOC_TOKENS bytes (= tokens for the byte tokenizer) of random words and numbers."""
    rng = random.Random(seed)
    text = " ".join(f"{rng.choice(WORDS)} {rng.randrange(1000)}" for _ in range(tokens // 6 + 1))[:tokens]
    return [text[i:i + DOC_TOKENS] for i in range(0, len(text), DOC_TOKENS)]


def measure_shape(shape: str, device: torch.device, dtype: torch.dtype, ingest_tokens: int, sizes: list[int],
                  work: Path) -> dict:
    config = shaped_config(shape)
    result: dict = {"parameters": parameters(config), "dtype": str(dtype).removeprefix("torch."),
                    "kv_bytes_per_token": {"fp16": kv_bytes_per_token(config, 2)}}
    start = time.perf_counter()
    directory = save_random_model(shape, work / shape / "model", dtype, device)
    result["build_and_save_s"] = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    lm = load_model(directory, device=str(device), dtype=str(dtype).removeprefix("torch."))
    result["load_s"] = lm.load_seconds
    if device.type == "cuda":
        result["gpu_weights_mb"] = torch.cuda.memory_allocated() / 2**20
    settings = MemorySettings()
    parts = synthetic_documents(ingest_tokens)
    plain_forward_seconds(lm, parts[:1], settings)  # warm-up: first-call allocations, kernel selection
    plain_s, n_tokens = plain_forward_seconds(lm, parts, settings)
    store = work / shape / "store"
    mem = Memory.create(store, lm, settings)
    start = time.perf_counter()
    for i, text in enumerate(parts):
        mem.ingest_document(text, f"synthetic/{i}")
    ingest_s = time.perf_counter() - start
    result["ingest"] = {"tokens": n_tokens, "l2m_tokens_per_s": n_tokens / ingest_s,
                        "plain_forward_tokens_per_s": n_tokens / plain_s, "ratio_to_plain": plain_s / ingest_s}
    result["kv_bytes_per_token"]["int8_stored"] = mem.stats()["kv_bytes_per_token"]
    mem.close()
    result["first_token_s"] = {}
    base_k, done = max(1, n_tokens // 1024), 0
    for size in sizes:
        copies = max(0, size // base_k - 1)
        with Memory.open(store, lm) as m:
            if copies > done:
                replicate(m, done + 1, copies)
                m.refresh()
                done = copies
            result["first_token_s"][f"{size}K"] = {"tokens": m.stats()["tokens"], "seconds": first_token_seconds(m)}
    if device.type == "cuda":
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del lm
    shutil.rmtree(work / shape, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/throughput.json"))
    parser.add_argument("--shapes", default="0.5B,1.5B,7B")
    parser.add_argument("--sizes", default="16,256,1024", help="memory sizes in K tokens for time to first token")
    parser.add_argument("--ingest-tokens", type=int, default=16384)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (models and stores; large)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="l2m-throughput-", dir=args.work))
    result: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "threads": torch.get_num_threads(), "settings": MemorySettings().to_dict(), "shapes": {}}
    try:
        for shape in args.shapes.split(","):
            result["shapes"][shape] = measure_shape(shape, device, dtype, args.ingest_tokens,
                                                    [int(s) for s in args.sizes.split(",")], work)
            args.out.write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = result["shapes"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in shapes.items():
        ttft = r["first_token_s"].values()
        a.plot([v["tokens"] / 1024 for v in ttft], [v["seconds"] for v in ttft], marker="o", label=name)
    a.set(xlabel="memory size (K tokens)", ylabel="time to first token (s)", title="Reading", xscale="log")
    a.set_ylim(bottom=0)
    a.legend()
    x = range(len(shapes))
    b.bar([i - 0.2 for i in x], [r["ingest"]["plain_forward_tokens_per_s"] for r in shapes.values()], 0.4,
          label="plain forward")
    b.bar([i + 0.2 for i in x], [r["ingest"]["l2m_tokens_per_s"] for r in shapes.values()], 0.4, label="l2m ingest")
    b.set_xticks(list(x), list(shapes))
    b.set(ylabel="tokens / s", title=f"Writing ({result['device']})")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
