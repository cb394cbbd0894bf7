"""`l2m ingest` end to end against the plain forward pass of the same model over the same tokens, where the
time goes, and the peak RSS of ingesting one document by its size. Writes JSON and a PNG.

    python -m bench.bench_ingest --out bench/results/ingest.json                       # both corpora, whole
    python -m bench.bench_ingest --max-tokens 8192 --out /tmp/ingest.json              # a quick iteration
    python -m bench.bench_ingest --rss 10,40,80 --out bench/results/ingest_rss.json    # peak RSS per size

Throughput: each corpus is copied to a scratch folder (the code corpus: its files in name order, the prose
corpus: one file, both cut at `--max-tokens`) and ingested through `Agent.ingest`, the function `l2m ingest`
calls, into a new store with the model already loaded: everything but model load is timed (scan, tree-sitter
index, tokenising, the model, representatives, compression, SQLite). The plain forward pass is the same model
over the same documents' tokens in chunks of `chunk_size` (512), each chunk a forward pass on its own, timed
before and after the ingest in the same run (their mean is the reference); with `--window`, also the plain pass
with the ingest's window (sink + local tokens through a trimmed cache, `bench_memory.plain_forward_seconds`).
Wall and CPU seconds are both recorded: where other work shares the cores, the CPU-time ratio is the steadier
one. The breakdown wraps the pipeline's functions with timers: CPU time of the calling thread per part (each
part without the parts it calls), summed over calls; "rest" is the ingest's CPU time that no part holds.

RSS: each size runs in its own process (`--rss-one`), which loads the model, ingests one document of that many
tokens (the prose corpus, repeated as needed) and reports its peak RSS (getrusage).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from agent.core import Agent
from bench.bench_memory import plain_forward_seconds
from bench.pyplot import pyplot
from l2m_core import attention, codec
from l2m_core.loading import load_model
from l2m_core.memory import Memory
from l2m_core.rope import Rotary
from l2m_core.settings import MemorySettings
from l2m_core.store import ColdTier, Staging
from repos_index.pipeline import Updater

PROSE = [Path("/work/corpora/legal/cra.txt"),
         Path(__file__).resolve().parents[2] / "shared" / "data" / "legal" / "eu_dora_2022_2554.txt"]


def default_code() -> Path | None:
    """The installed `pathspec` package's source (a dependency of the index, so always there)."""
    spec = importlib.util.find_spec("pathspec")
    return Path(spec.origin).parent if spec and spec.origin else None


def default_prose() -> Path | None:
    return next((p for p in PROSE if p.is_file()), None)


# ---- corpora -----------------------------------------------------------------------------------------

def prepare_corpus(source: Path, root: Path, tokenizer, max_tokens: int | None) -> list[str]:
    """Copy `source` (a folder's files in name order, or one file) into `root`, stopping once `max_tokens`
    tokens are copied (a single file is cut there); the copied texts, in order."""
    root.mkdir(parents=True)
    files = [source] if source.is_file() else sorted(
        p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    texts, total = [], 0
    for path in files:
        if max_tokens is not None and total >= max_tokens:
            break
        text = path.read_text(encoding="utf-8")
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        n = len(encoded["input_ids"])
        if source.is_file() and max_tokens is not None and n > max_tokens:
            text, n = text[:encoded["offset_mapping"][max_tokens][0]], max_tokens
        relative = path.name if source.is_file() else path.relative_to(source)
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text, encoding="utf-8")
        texts.append(text)
        total += n
    return texts


def document_of(tokenizer, prose: Path, tokens: int) -> str:
    """A document of exactly `tokens` tokens of prose (the file repeated as needed)."""
    text = prose.read_text(encoding="utf-8")
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = "\n\n".join([text] * (tokens // n + 1))
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return text[:offsets[tokens][0]]


# ---- profile -----------------------------------------------------------------------------------------

class Timers:
    """Inclusive CPU time (of the calling thread) and calls per name, of functions wrapped while `patched` is
    active: CPU time, because the machine's cores are shared and wall time per call swings with the load."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.thread_time() - start
                self.calls[name] += 1
        return timed

    def wrap_generator(self, name: str, fn: Callable) -> Callable:
        """Time each step of the generators `fn` returns (the time its consumer spends is not counted)."""
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            inner = fn(*args, **kwargs)
            while True:
                start = time.thread_time()
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    self.seconds[name] += time.thread_time() - start
                    self.calls[name] += 1
                yield item
        return timed

    @contextmanager
    def patched(self, targets: list[tuple[object, str, str]], generators: list[tuple[object, str, str]]
                ) -> Iterator[None]:
        saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in [*targets, *generators]]
        for owner, attr, name in targets:
            setattr(owner, attr, self.wrap(name, getattr(owner, attr)))
        for owner, attr, name in generators:
            setattr(owner, attr, self.wrap_generator(name, getattr(owner, attr)))
        try:
            yield
        finally:
            for owner, attr, fn in saved:
                setattr(owner, attr, fn)


def breakdown(t: dict[str, float], cpu: float) -> dict[str, float]:
    """Seconds per part of the ingest, each part's own time (what it calls that is a part is not in it)."""
    parts = {
        "index (scan, tree-sitter, index tables, block map)": t["index"] + t["order"] + t["map_blocks"],
        "tokenise": t["tokenize"],
        "model forward (without the attention hook)": t["forward"] - t["attend"],
        "attention hook: attention": t["attend"] - t["received"] - t["rotary"],
        "attention hook: received attention": t["received"],
        "attention hook: rotate/unrotate": t["rotary"],
        "buffers (record plan, slicing, concatenation)": t["encode_blocks"] - t["forward"],
        "representatives": t["representatives"],
        "codec": t["codec"],
        "database (staged inserts, the commit; ColdTier.write)": t["db_write"],
        "index in RAM (Memory._written)": t["written"],
    }
    parts["rest"] = cpu - sum(parts.values())
    return parts


def profiled_ingest(lm, root: Path, store: Path) -> tuple[float, float, dict, dict]:
    """Ingest `root` into a new store at `store` through `Agent.ingest`: wall and CPU seconds (model loaded
    before), the breakdown (CPU seconds), the store's stats."""
    timers = Timers()
    tokenizer_type = type(lm.tokenizer)
    targets = [(Updater, "_detect_changes", "index"), (Updater, "_index_file", "index"), (Updater, "_order", "order"),
               (Updater, "_map_blocks", "map_blocks"), (tokenizer_type, "__call__", "tokenize"),
               (lm.model, "forward", "forward"), (attention.RecordPlan, "attend", "attend"),
               (attention, "received_attention", "received"), (Rotary, "rotate", "rotary"),
               (Rotary, "unrotate", "rotary"), (Memory, "_representatives", "representatives"),
               (codec, "encode_layers", "codec"), (ColdTier, "write", "db_write"), (Staging, "_flush", "db_write"),
               (Staging, "_make_live", "db_write"), (Memory, "_written", "written")]
    with timers.patched(targets, [(Memory, "_encode_blocks", "encode_blocks")]):
        start, cpu = time.perf_counter(), time.process_time()
        with Agent.open(root, store, model=lm) as agent:
            report = agent.ingest()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            stats = agent.memory.stats()
    if report.errors:
        raise SystemExit(f"ingest failed: {report.errors}")
    return wall, cpu, {k: round(v, 3) for k, v in breakdown(timers.seconds, cpu).items()}, stats


def plain_seconds(lm, texts: list[str], window: bool) -> tuple[float, float, int]:
    """`plain_forward_seconds` with the CPU time it took: wall seconds, CPU seconds, tokens."""
    cpu = time.process_time()
    wall, tokens = plain_forward_seconds(lm, texts, MemorySettings(), window)
    return wall, time.process_time() - cpu, tokens


def measure_corpus(lm, name: str, source: Path, max_tokens: int | None, work: Path, window: bool) -> dict:
    texts = prepare_corpus(source, work / name / "corpus", lm.tokenizer, max_tokens)
    plain_seconds(lm, texts[:1], window=False)  # warm-up: first-call allocations
    before = plain_seconds(lm, texts, window=False)
    windowed = plain_seconds(lm, texts, window=True) if window else None
    ingest_s, ingest_cpu, parts, stats = profiled_ingest(lm, work / name / "corpus", work / name / "store")
    after = plain_seconds(lm, texts, window=False)
    tokens = before[2]
    plain_s, plain_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    shutil.rmtree(work / name, ignore_errors=True)
    result = {"source": str(source), "files": len(texts), "tokens": tokens, "stored_tokens": stats["tokens"],
              "blocks": stats["blocks"], "ingest_s": round(ingest_s, 2), "ingest_cpu_s": round(ingest_cpu, 2),
              "plain_forward_s": [round(before[0], 2), round(after[0], 2)],
              "plain_forward_cpu_s": [round(before[1], 2), round(after[1], 2)],
              "l2m_tokens_per_s": round(tokens / ingest_s, 1), "plain_tokens_per_s": round(tokens / plain_s, 1),
              "ratio_to_plain": round(plain_s / ingest_s, 3), "ratio_to_plain_cpu": round(plain_cpu / ingest_cpu, 3),
              "breakdown_cpu_s": parts}
    if windowed is not None:
        result.update(plain_window_s=round(windowed[0], 2), plain_window_cpu_s=round(windowed[1], 2),
                      ratio_to_plain_window_cpu=round(windowed[1] / ingest_cpu, 3))
    return result


# ---- peak RSS by document size ------------------------------------------------------------------------

def rss_one(tokens: int, prose: Path) -> dict:
    """In this process: load the model, ingest one document of `tokens` tokens, report the peak RSS."""
    lm = load_model(None, device="cpu")
    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    work = Path(tempfile.mkdtemp(prefix="l2m-rss-"))
    try:
        (work / "corpus").mkdir()
        (work / "corpus" / "document.txt").write_text(document_of(lm.tokenizer, prose, tokens), encoding="utf-8")
        start = time.perf_counter()
        with Agent.open(work / "corpus", work / "store", model=lm) as agent:
            agent.ingest()
            stored = agent.memory.stats()["tokens"]
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"tokens": stored, "seconds": round(seconds, 1), "rss_after_load_mb": round(loaded_mb, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def rss_by_size(sizes_k: list[int], prose: Path) -> dict:
    runs = {}
    for k in sizes_k:
        done = subprocess.run([sys.executable, "-m", "bench.bench_ingest", "--rss-one", str(k * 1024),
                               "--prose", str(prose)], capture_output=True, text=True, check=True)
        runs[f"{k}K"] = json.loads(done.stdout.strip().splitlines()[-1])
        print(k, runs[f"{k}K"], file=sys.stderr)
    peaks = [r["peak_rss_mb"] for r in runs.values()]
    return {"prose": str(prose), "runs": runs, "max_over_min": round(max(peaks) / min(peaks), 3)}


# ---- main ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/ingest.json"))
    parser.add_argument("--code", type=Path, default=default_code(), help="a source folder (default: pathspec)")
    parser.add_argument("--prose", type=Path, default=default_prose(), help="a prose file (default: the CRA)")
    parser.add_argument("--corpora", default="code,prose")
    parser.add_argument("--max-tokens", type=int, default=None, help="cut each corpus at this many tokens")
    parser.add_argument("--rss", default=None, help="K tokens per document, e.g. 10,40,80: the peak RSS mode")
    parser.add_argument("--rss-one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--window", action="store_true", help="also time the plain pass with the ingest's window")
    parser.add_argument("--before", type=Path, default=None, help="an earlier JSON to plot beside this run")
    args = parser.parse_args()
    if args.rss_one is not None:
        print(json.dumps(rss_one(args.rss_one, args.prose)))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"threads": torch.get_num_threads(), "settings": MemorySettings().to_dict()}
    if args.rss:
        result["rss"] = rss_by_size([int(k) for k in args.rss.split(",")], args.prose)
    else:
        lm = load_model(None, device="cpu")
        result.update(model=lm.name, dtype=lm.dtype_name, corpora={})
        work = Path(tempfile.mkdtemp(prefix="l2m-ingest-"))
        try:
            for name in args.corpora.split(","):
                source = {"code": args.code, "prose": args.prose}[name]
                result["corpora"][name] = measure_corpus(lm, name, source, args.max_tokens, work, args.window)
                args.out.write_text(json.dumps(result, indent=2))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(result, indent=2))
    before = json.loads(args.before.read_text()) if args.before else None
    plot(result, before, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))


def plot(result: dict, before: dict | None, path: Path) -> None:
    plt = pyplot()
    if "rss" in result:
        runs = {"after": result["rss"]["runs"], **({"before": before["rss"]["runs"]} if before else {})}
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, r in runs.items():
            ax.plot([v["tokens"] / 1024 for v in r.values()], [v["peak_rss_mb"] for v in r.values()], marker="o",
                    label=label)
        ax.set(xlabel="document size (K tokens)", ylabel="peak RSS (MB)", title="Ingesting one document")
        ax.set_ylim(bottom=0)
        ax.legend()
    else:
        runs = {"after": result, **({"before": before} if before else {})}
        fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
        bars, labels = [], []
        for corpus, r in result["corpora"].items():
            bars.append(r["tokens"] * 2 / sum(r["plain_forward_cpu_s"]))
            labels.append(f"{corpus}\nplain")
            for label, run in runs.items():
                if corpus in run.get("corpora", {}):
                    bars.append(run["corpora"][corpus]["tokens"] / run["corpora"][corpus]["ingest_cpu_s"])
                    labels.append(f"{corpus}\nl2m {label}\n{run['corpora'][corpus]['ratio_to_plain_cpu']:.2f}x")
        a.bar(range(len(bars)), bars)
        a.set_xticks(range(len(bars)), labels, fontsize=8)
        a.set(ylabel="tokens per CPU second", title="Ingest against the plain forward pass (512-token chunks)")
        names = [(label, corpus) for corpus in result["corpora"] for label, run in runs.items()
                 if corpus in run.get("corpora", {})]
        parts = list(next(iter(result["corpora"].values()))["breakdown_cpu_s"])
        bottom = [0.0] * len(names)
        colours = plt.get_cmap("tab20").colors
        for part, colour in zip(parts, colours, strict=False):
            heights = [runs[label]["corpora"][corpus]["breakdown_cpu_s"].get(part, 0.0)
                       / runs[label]["corpora"][corpus]["tokens"] * 1000 for label, corpus in names]
            b.bar(range(len(names)), heights, bottom=bottom, label=part, color=colour)
            bottom = [x + h for x, h in zip(bottom, heights, strict=True)]
        b.set_xticks(range(len(names)), [f"{c}\n{label}" for label, c in names], fontsize=8)
        b.set(ylabel="CPU ms per token", title="Where ingest time goes (CPU time per part)")
        b.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
