"""Which arithmetic the CPU forward pass could run in: fp32, bf16 and dynamic int8 matmuls, side by side.

    python -m bench.bench_dtypes --out bench/results/dtypes.json

The default model over the same 512-token chunks of real text (the CRA and the `pathspec` package, the
ingest benchmark's corpora) in each variant, one run: seconds per chunk (wall and CPU) and, against fp32,
how often the greedy next token is the same at every position of the chunk (1.0: answers cannot change).
int8 is torch's dynamic quantization of every decoder `nn.Linear` (per-tensor activation scales computed
on the fly; the output head stays fp32). `auto` on a CPU chooses between fp32 and bf16 only
(`l2m_core.cpu_dtype`); this records why int8 is not among them.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import torch

from bench.bench_ingest import default_code, default_prose
from bench.pyplot import pyplot
from l2m_core.loading import load_model

CHUNK = 512


def chunks(tokenizer, count: int) -> list[list[int]]:
    """`count` chunks of 512 tokens, half from the prose corpus and half from the code corpus."""
    out = []
    for source in (default_prose(), default_code()):
        files = [source] if source.is_file() else sorted(source.rglob("*.py"))
        ids = tokenizer("\n".join(f.read_text(encoding="utf-8") for f in files), add_special_tokens=False)["input_ids"]
        out += [ids[i:i + CHUNK] for i in range(0, CHUNK * (count // 2), CHUNK)]
    return out


def int8(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice (moving to torchao)
        quantized = copy.deepcopy(model)
        quantized.model = torch.ao.quantization.quantize_dynamic(quantized.model, {torch.nn.Linear},
                                                                  dtype=torch.qint8)
    return quantized


def run(model, parts: list[list[int]]) -> tuple[float, float, list[torch.Tensor]]:
    """Seconds per chunk (wall, CPU) after one warm-up pass, and each chunk's greedy next tokens."""
    with torch.inference_mode():
        model(torch.tensor([parts[0]]))
        wall, cpu = time.perf_counter(), time.process_time()
        tokens = [model(torch.tensor([ids])).logits[0].argmax(-1) for ids in parts]
    return (time.perf_counter() - wall) / len(parts), (time.process_time() - cpu) / len(parts), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/dtypes.json"))
    parser.add_argument("--chunks", type=int, default=8)
    args = parser.parse_args()
    lm = load_model(None, device="cpu", dtype="float32")
    parts = chunks(lm.tokenizer, args.chunks)
    variants = {"float32": lambda: lm.model, "bfloat16": lambda: copy.deepcopy(lm.model).to(torch.bfloat16),
                "int8 dynamic": lambda: int8(lm.model)}
    result: dict = {"model": lm.name, "threads": torch.get_num_threads(), "chunks": len(parts), "variants": {}}
    reference = None
    for name, make in variants.items():
        wall, cpu, tokens = run(make(), parts)
        if reference is None:  # the first variant, fp32
            reference = tokens
        same = sum((a == b).sum().item() for a, b in zip(tokens, reference, strict=True)) / sum(map(len, parts))
        result["variants"][name] = {"seconds_per_chunk": round(wall, 3), "cpu_seconds_per_chunk": round(cpu, 3),
                                    "speed_vs_float32": None, "next_token_same_as_float32": round(same, 4)}
        print(name, result["variants"][name], flush=True)
    base = result["variants"]["float32"]["seconds_per_chunk"]
    for row in result["variants"].values():
        row["speed_vs_float32"] = round(base / row["seconds_per_chunk"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    names = list(result["variants"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(names, [result["variants"][n]["speed_vs_float32"] for n in names])
    axes[0].set_title("speed against fp32 (one run)")
    axes[1].bar(names, [result["variants"][n]["next_token_same_as_float32"] for n in names])
    axes[1].set_title("greedy next token as in fp32")
    axes[1].set_ylim(0, 1)
    fig.suptitle(f"{result['model']}, {result['chunks']} chunks of {CHUNK} tokens, {result['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
