"""Answer latency: time to first token and per generated token of `Memory.ask` against the plain model generating
the same number of tokens after a 1K-token prompt, and against BM25 re-prompting end to end; time to first
token at 16K and 256K tokens of memory. Writes JSON and a PNG.

    python -m bench.bench_answer --out bench/results/answer_latency.json

The store holds 16K tokens of a novel (`bench_memory.haystack`), replicated for 256K (`bench_memory.replicate`:
real stored states under new document names). Each question is asked with `max_new_tokens` 32; an answer that
stops earlier (a stop token) counts as it is, with its own token count. Time to first token is the time from
the call to the first decoding step (addressing, reading, prefill); per token is the decoding time over the
tokens fed after the first. The plain model: a fresh cache, a chat prompt over 1K tokens of the same novel,
32 tokens forced (no stop token). BM25 re-prompting: the memory's own BM25 picks the blocks (`Memory.read_set`),
their text is pasted into the same chat prompt, and the plain model answers; its time to first token includes
the retrieval. Wall and CPU seconds are both recorded (the cores are shared; the median over the questions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_ingest import Timers
from bench.bench_memory import QUESTIONS, haystack, replicate
from bench.pyplot import pyplot
from l2m_core.generation import PrefixCache, greedy
from l2m_core.loading import load_model
from l2m_core.memory import Memory, pasted_prompt

NEW_TOKENS = 32


class Clock:
    """A moment, on the wall clock and on the process's CPU clock."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def since(self, other: Clock) -> tuple[float, float]:
        return self.wall - other.wall, self.cpu - other.cpu


def timing(start: Clock, first: Clock, end: Clock, fed: int, tokens: int) -> dict:
    ttft, decode = first.since(start), end.since(first)
    return {"tokens": tokens, "tokens_fed": fed, "first_token_s": ttft[0], "first_token_cpu_s": ttft[1],
            "per_token_s": decode[0] / max(fed, 1), "per_token_cpu_s": decode[1] / max(fed, 1)}


def plain_answer(lm, ids: list[int], max_new_tokens: int, stop=frozenset()) -> tuple[Clock, Clock, int, int]:
    """The plain model's greedy reply to `ids` from an empty cache: (first token, end) clocks, tokens fed, tokens."""
    cache, fed = PrefixCache(lm.model), 0

    def feed(token: int) -> torch.Tensor:
        nonlocal fed
        fed += 1
        return cache.feed([token])

    with torch.inference_mode():
        logits = cache.prompt(ids)
        first = Clock()
        reply = greedy(logits, feed, stop, max_new_tokens)
    return first, Clock(), fed, len(reply.tokens)


def plain_1k(lm, text: str) -> dict:
    """The plain model generating NEW_TOKENS tokens (forced) after a 1K-token chat prompt over `text`."""
    tokenizer = lm.tokenizer
    context = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:1024 - 64])
    ids = tokenizer(pasted_prompt(tokenizer, "Who is Mr. Darcy?", context), add_special_tokens=False)["input_ids"]
    start = Clock()
    first, end, fed, tokens = plain_answer(lm, ids, NEW_TOKENS)
    return {"prompt_tokens": len(ids), **timing(start, first, end, fed, tokens)}


def bm25_answer(mem: Memory, question: str) -> dict:
    """BM25 re-prompting end to end: retrieve the blocks, paste their text into the prompt, answer."""
    start = Clock()
    blocks = mem.read_set(question)
    texts = mem.block_texts(blocks)
    context = "\n\n".join(texts[b] for b in blocks)
    ids = mem.tokenizer(pasted_prompt(mem.tokenizer, question, context), add_special_tokens=False)["input_ids"]
    first, end, fed, tokens = plain_answer(mem.lm, ids, NEW_TOKENS, mem.stop_ids)
    return {"prompt_tokens": len(ids), **timing(start, first, end, fed, tokens)}


def memory_answer(mem: Memory, question: str) -> dict:
    """`Memory.ask` with NEW_TOKENS tokens at most: the first decoding step marks the first token; what follows
    decoding (citations, their re-ranking, naming the answer) is `after_decode_s`."""
    marks: list[Clock] = []
    timers = Timers()
    decode = mem._decode
    fed = 0

    def marked(*args, **kwargs):
        nonlocal fed
        marks.append(Clock())
        before = timers.calls["forward"]
        try:
            return decode(*args, **kwargs)
        finally:
            marks.append(Clock())
            fed = timers.calls["forward"] - before

    start = Clock()
    mem._decode = marked
    try:
        with timers.patched([(mem.model, "forward", "forward")], []):
            answer = mem.ask(question, max_new_tokens=NEW_TOKENS)
    finally:
        del mem._decode
    done = Clock()
    tokens = len(mem.tokenizer(answer.text, add_special_tokens=False)["input_ids"])
    return timing(start, marks[0], marks[1], fed, tokens) | {"after_decode_s": done.since(marks[1])[0]}


def medians(runs: list[dict]) -> dict:
    return {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]} | {"runs": len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/answer_latency.json"))
    parser.add_argument("--base-k", type=int, default=16, help="K tokens ingested")
    parser.add_argument("--large-k", type=int, default=256, help="K tokens of memory for the second measurement")
    parser.add_argument("--questions", type=int, default=5)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lm = load_model(None, device="cpu")
    result: dict = {"model": lm.name, "threads": torch.get_num_threads(), "new_tokens": NEW_TOKENS}
    with tempfile.TemporaryDirectory(prefix="l2m-answer-") as work:
        try:
            measure(lm, Path(work), args, result)
        finally:
            args.out.write_text(json.dumps(result, indent=2))  # what was measured, even after a failure
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))


def measure(lm, work: Path, args, result: dict) -> None:
    questions = QUESTIONS[:args.questions]
    parts = haystack(lm.tokenizer, args.base_k * 1024)
    with Memory.create(work / "store", lm) as mem:
        for i, text in enumerate(parts):
            mem.ingest_document(text, f"pride/{i}")
        memory_answer(mem, QUESTIONS[-1])  # warm-up: first-call allocations
        result["plain_1k_prompt"] = medians([plain_1k(lm, text) for text in haystack(lm.tokenizer, 3 * 2048)])
        result[f"memory_{args.base_k}K"] = medians([memory_answer(mem, q) for q in questions])
        result[f"bm25_reprompt_{args.base_k}K"] = medians([bm25_answer(mem, q) for q in questions])
        replicate(mem, 1, args.large_k // args.base_k - 1)
        mem.refresh()
        result["large_tokens"] = mem.stats()["tokens"]
        memory_answer(mem, QUESTIONS[-1])
        result[f"memory_{args.large_k}K"] = medians([memory_answer(mem, q) for q in questions])
        result[f"bm25_reprompt_{args.large_k}K"] = medians([bm25_answer(mem, q) for q in questions])


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    rows = {k: v for k, v in result.items() if isinstance(v, dict)}
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    names = [k.replace("_", " ") for k in rows]
    a.bar(names, [v["first_token_s"] for v in rows.values()])
    a.set(ylabel="seconds (median)", title="Time to first token")
    b.bar(names, [v["per_token_s"] * 1000 for v in rows.values()])
    b.set(ylabel="ms per generated token (median)", title=f"Decoding ({result['new_tokens']} tokens at most)")
    for ax in (a, b):
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
