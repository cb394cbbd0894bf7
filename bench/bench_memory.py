"""Memory-engine benchmark on the default model: ingest throughput, time to first token against memory
size, bytes per stored token, hot-tier hit rate, peak RSS. Writes JSON and a PNG.

    python bench/bench_memory.py --out bench/out/memory.json

Ratios are measured in one run. The 64K and 256K stores are built by replicating the 16K store's blocks
under new document names (real stored states, repeated text) so that read-time scaling can be measured
without hours of CPU ingest; ingest throughput is measured on real text separately.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from l2m_core.loading import load_model
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUESTIONS = [
    "Who is Mr. Bingley?", "What does Mrs. Bennet want for her daughters?", "Where is Netherfield Park?",
    "Who is Elizabeth's closest sister?", "What does Mr. Darcy think of Elizabeth at the ball?",
    "Who is Mr. Collins?", "What is Longbourn?", "Who is Charlotte Lucas?", "What happened at the assembly?",
    "Who is Mr. Wickham?", "Who is Mr. Bingley?", "What does Jane think of Bingley?", "Who is Lady Catherine?",
    "What did Mr. Bennet say to his wife?", "Who is Caroline Bingley?", "What is Meryton?",
    "Who is Mr. Darcy?", "What does Mrs. Bennet want for her daughters?", "Who is Lydia?", "Who is Kitty?",
]


def haystack(tokenizer, tokens: int, offset: int = 0) -> list[str]:
    ids = tokenizer((DATA / "haystack" / "pride.txt").read_text(), add_special_tokens=False)["input_ids"]
    ids = ids[offset:offset + tokens]
    return [tokenizer.decode(ids[i:i + 2048]) for i in range(0, len(ids), 2048)]


def plain_forward_seconds(lm, parts: list[str], settings: MemorySettings, window: bool = True) -> tuple[float, int]:
    """The bare model (its own attention and cache) over the same chunks with the same window: each chunk
    attends to the document's first `sink` and last `local` tokens through a trimmed cache; nothing is
    kept. The difference to `l2m ingest` is the memory's own work (keys un-rotated, representatives,
    compression, the database). `window=False`: each chunk is a forward pass on its own (no cache), the
    plain model's cost of the tokens alone, which the window's own cost is measured against."""
    total, start = 0, time.perf_counter()
    for text in parts:
        ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        cache = DynamicCache() if window else None
        for t0 in range(0, len(ids), settings.chunk_size):
            chunk = ids[t0:t0 + settings.chunk_size]
            with torch.inference_mode():
                lm.model(torch.tensor([chunk], device=lm.device), cache=cache, use_cache=window,
                         logits_to_keep=1, position_ids=torch.arange(t0, t0 + len(chunk), device=lm.device)[None])
            for layer in cache.layers if window else ():
                if layer.keys.shape[2] > settings.sink + settings.local:
                    keep = layer.keys.shape[2] - settings.local  # not `-local:`, which keeps all with local=0
                    layer.keys, layer.values = (torch.cat([x[:, :, :settings.sink], x[:, :, keep:]], 2)
                                                for x in (layer.keys, layer.values))
        total += len(ids)
    if lm.device.type == "cuda":
        torch.cuda.synchronize()  # kernels run asynchronously: wait for the last chunk's
    return time.perf_counter() - start, total


def replicate(mem: Memory, first: int, last: int) -> None:
    """Add copies number `first`..`last` of every original document of the store (blocks and key/value
    rows included)."""
    originals = [source for source in mem.cold.sources() if "#copy" not in source]
    for copy in range(first, last + 1):
        for source in originals:
            mem.cold.copy(source, f"{source}#copy{copy}")


def first_token_seconds(mem: Memory, repeats: int = 3) -> float:
    """Median over `repeats` questions, after one warm-up question (first-call allocations)."""
    mem.ask(QUESTIONS[-1], max_new_tokens=1)
    return statistics.median(mem.ask(QUESTIONS[i], max_new_tokens=1).timings["first_token_s"]
                             for i in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/memory.json"))
    parser.add_argument("--ingest-tokens", type=int, default=8192)
    parser.add_argument("--sizes", default="16,64,256", help="memory sizes in K tokens for time to first token")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lm = load_model(None, device="auto")
    work = Path(tempfile.mkdtemp(prefix="l2m-bench-"))
    result: dict = {"model": lm.name, "device": str(lm.device), "threads": torch.get_num_threads()}
    try:
        # 1. ingest throughput vs the bare model over the same chunks
        parts = haystack(lm.tokenizer, args.ingest_tokens)
        settings = MemorySettings()
        plain_forward_seconds(lm, parts[:1], settings)  # warm-up: first-call allocations
        plain_s, n_tokens = plain_forward_seconds(lm, parts, settings)
        mem = Memory.create(work / "ingest", lm, settings)
        start = time.perf_counter()
        for i, text in enumerate(parts):
            mem.ingest_document(text, f"pride/{i}")
        ingest_s = time.perf_counter() - start
        result["ingest"] = {"tokens": n_tokens, "l2m_tokens_per_s": n_tokens / ingest_s,
                            "plain_forward_tokens_per_s": n_tokens / plain_s, "overhead": ingest_s / plain_s - 1}
        # 2. bytes per stored token by codec
        result["bytes_per_token"] = {}
        for name in ("int8", "fp16", "int4"):
            m = Memory.create(work / f"codec-{name}", lm, MemorySettings(codec=name))
            m.ingest_document(parts[0][:4000], "pride/0")
            stats = m.stats()
            result["bytes_per_token"][name] = {"kv": stats["kv_bytes_per_token"],
                                               "repr_in_ram": stats["repr_bytes_in_ram"] / stats["tokens"]}
            m.close()
        # 3. time to first token vs memory size (16K of real states, replicated for larger sizes)
        sizes = [int(s) for s in args.sizes.split(",")]
        base = work / "ttft"
        mem16 = Memory.create(base, lm, settings)
        for i, text in enumerate(haystack(lm.tokenizer, sizes[0] * 1024)):
            mem16.ingest_document(text, f"pride/{i}")
        mem16.close()
        result["first_token_s"] = {}
        done_copies = 0
        for size in sizes:
            copies = size // sizes[0] - 1
            m = Memory.open(base, lm)
            if copies > done_copies:
                replicate(m, done_copies + 1, copies)
                m.refresh()
                done_copies = copies
            result["first_token_s"][f"{size}K"] = {"tokens": m.stats()["tokens"], "seconds": first_token_seconds(m)}
            m.close()
        # 4. hot-tier hit rate over a session of 20 questions (the ingest store: real text)
        session = Memory.open(work / "ingest", lm)
        for q in QUESTIONS:
            session.ask(q, max_new_tokens=8)
        result["hot_tier_session_20"] = session.stats()["hot_tier"]
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)
        args.out.write_text(json.dumps(result, indent=2))  # what was measured, even after a failure
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    ttft = result["first_token_s"]
    a.plot([v["tokens"] / 1024 for v in ttft.values()], [v["seconds"] for v in ttft.values()], marker="o")
    sizes = [v["tokens"] // 1024 for v in ttft.values()]
    a.set(xlabel="memory size (K tokens)", ylabel="time to first token (s)", title="Reading", xscale="log",
          ylim=(0, 1.2 * max(v["seconds"] for v in ttft.values())))
    a.set_xticks(sizes, [f"{k}K" for k in sizes])
    a.minorticks_off()
    ing = result["ingest"]
    b.bar(["plain forward", "l2m ingest"], [ing["plain_forward_tokens_per_s"], ing["l2m_tokens_per_s"]])
    b.set(ylabel="tokens / s", title=f"Writing ({result['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
