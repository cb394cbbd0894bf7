"""Soak: 1,000 questions in one `l2m batch` run on a 50K-token store; memory, file descriptors and threads.

The store is built with a hot tier much smaller than the store (so blocks are evicted and re-read from
the cold tier all along), then one `l2m batch` process answers the questions (a few garbage lines among
them exercise the error path) while this script samples its resident memory (RSS), open file
descriptors and threads, against the number of answers written so far. After a warm-up the RSS must
stay flat and the descriptors and threads must not grow. A tiny random model keeps it affordable on a
CPU; the mechanics under test (tiers, database, batch loop) are the same with the default model.

    python bench/soak.py --questions 1000 --tokens 50000 --out bench/out/soak.json    # and soak.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.crash import KEEPERS, NOVEL, STORE, cli_env  # noqa: E402

MB = 2**20


def build_store(root: Path, model_dir: Path, tokens: int, hot_budget_mb: float, files: int = 10) -> dict:
    """`files` slices of a novel totalling about `tokens` tokens (one byte each), each with one fact."""
    from agent import Agent
    from l2m_core.loading import kv_geometry, load_model
    from l2m_core.settings import MemorySettings

    text = NOVEL.read_text(encoding="utf-8")
    per_file = tokens // files
    root.mkdir(parents=True)
    for i in range(files):
        body = text[i * per_file:(i + 1) * per_file]
        body = body.encode("utf-8")[:per_file - 40].decode("utf-8", "ignore")
        (root / f"chapter_{i:02d}.txt").write_text(f"Vault {i} is kept by {KEEPERS[i]}.\n{body}", encoding="utf-8")
    lm = load_model(model_dir, device="cpu")
    started = time.perf_counter()
    with Agent.open(root, model=lm, settings=MemorySettings(hot_budget_mb=hot_budget_mb)) as agent:
        agent.ingest()
        stats = agent.memory.stats()
    cfg = lm.model.config
    per_token = 2 * cfg.num_hidden_layers * math.prod(kv_geometry(cfg))
    return {"tokens": stats["tokens"], "blocks": stats["blocks"], "documents": stats["documents"],
            "hot_budget_mb": hot_budget_mb, "cold_kv_mb": round(stats["kv_bytes"] / MB, 1),
            "all_blocks_in_hot_tier_mb": round(stats["tokens"] * per_token * lm.model.dtype.itemsize / MB, 1),
            "ingest_seconds": round(time.perf_counter() - started, 1)}


def write_questions(path: Path, count: int, garbage_every: int, seed: int = 0) -> int:
    """`count` questions (facts, and phrases from the novel) with a garbage line every `garbage_every`."""
    rng = random.Random(seed)
    words = NOVEL.read_text(encoding="utf-8").split()
    lines, garbage = [], 0
    for i in range(count):
        if i % 2:
            question = f"Who keeps vault {rng.randrange(10)}?"
        else:
            start = rng.randrange(len(words) - 8)
            question = "What happened when " + " ".join(words[start:start + 6]) + "?"
        lines.append(json.dumps({"id": f"q{i}", "question": question, "max_tokens": 8}))
        if garbage_every and i % garbage_every == garbage_every - 1:
            lines.append(rng.choice(['{"question": ', "not json at all", '{"id": "x"}', "[1, 2, 3]"]))
            garbage += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return garbage


def answered(path: Path) -> int:
    if not path.exists():
        return 0
    return path.read_bytes().count(b'"answer"')


def soak(store: Path, questions: Path, out: Path, interval: float) -> dict:
    """Run the batch, sampling the process until it exits."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", "batch", str(questions), "--out", str(out), "--store",
                             str(store), "--json"], cwd=store.parent, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    started = time.monotonic()
    samples = []
    while proc.poll() is None:
        try:
            with watched.oneshot():
                samples.append({"t": round(time.monotonic() - started, 2), "answered": answered(out),
                                "rss_mb": round(watched.memory_info().rss / MB, 2), "fds": watched.num_fds(),
                                "threads": watched.num_threads()})
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    stdout, stderr = proc.communicate()
    return {"status": proc.returncode, "stdout": stdout.strip()[-2000:], "stderr": stderr.strip()[-2000:],
            "seconds": round(time.monotonic() - started, 1), "samples": samples}


def summarise(run: dict, warmup: int, out: Path) -> dict:
    """RSS, descriptors and threads after the warm-up (first `warmup` answers) against the end."""
    samples = run["samples"]
    after = [s for s in samples if s["answered"] >= warmup]
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    totals = sorted(r["timings"]["total_s"] for r in records if "answer" in r)
    summary = {
        "answers": sum("answer" in r for r in records), "error_records": sum("error" in r for r in records),
        "seconds_per_answer_median": totals[len(totals) // 2] if totals else None,
        "peak_rss_mb": max((s["rss_mb"] for s in samples), default=None),
    }
    if len(after) >= 2:
        xs = [s["answered"] for s in after]
        ys = [s["rss_mb"] for s in after]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        spread = sum((x - mean_x) ** 2 for x in xs) or 1.0
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
        summary.update({
            "warmup_answers": warmup,
            "rss_mb_at_warmup": after[0]["rss_mb"], "rss_mb_at_end": after[-1]["rss_mb"],
            "peak_rss_mb_after_warmup": max(ys), "min_rss_mb_after_warmup": min(ys),
            "rss_slope_mb_per_100_answers": round(100 * slope, 3),
            "fds_at_warmup": after[0]["fds"], "fds_at_end": after[-1]["fds"], "fds_max": max(s["fds"] for s in after),
            "threads_at_warmup": after[0]["threads"], "threads_at_end": after[-1]["threads"],
            "threads_max": max(s["threads"] for s in after),
        })
    return summary


def verdict(summary: dict, questions: int, garbage: int, hot_budget_mb: float) -> bool:
    """Every question answered and every garbage line reported; after the warm-up, RSS grows by no more than
    the hot tier's budget (the cache filling up), and descriptors and threads never exceed their warm-up count."""
    return (summary["answers"] == questions and summary["error_records"] == garbage
            and "rss_mb_at_warmup" in summary
            and summary["peak_rss_mb_after_warmup"] - summary["rss_mb_at_warmup"] <= hot_budget_mb
            and summary["fds_max"] <= summary["fds_at_warmup"]
            and summary["threads_max"] <= summary["threads_at_warmup"])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["run"]["samples"]
    xs = [s["answered"] for s in samples]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(xs, [s["rss_mb"] for s in samples], color="#4c72b0")
    top.axvline(result["summary"].get("warmup_answers", 0), color="grey", linestyle="--", label="end of warm-up")
    top.set_ylabel("RSS (MB)")
    top.set_title(f"`l2m batch`: {result['summary']['answers']} answers on a {result['store']['tokens']:,}-token "
                  f"store (hot tier {result['store']['hot_budget_mb']:g} MB for "
                  f"{result['store']['all_blocks_in_hot_tier_mb']} MB of blocks)")
    top.legend()
    bottom.plot(xs, [s["fds"] for s in samples], label="open file descriptors", color="#55a868")
    bottom.plot(xs, [s["threads"] for s in samples], label="threads", color="#c44e52")
    bottom.set_xlabel("questions answered")
    bottom.set_ylim(bottom=0)
    bottom.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--hot-budget-mb", type=float, default=8.0, help="well below the store's size")
    parser.add_argument("--warmup", type=int, default=100, help="answers before RSS must be flat")
    parser.add_argument("--garbage-every", type=int, default=100, help="a malformed line after every N questions")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "soak.json")
    args = parser.parse_args()

    from l2m_core.tiny import save_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        scratch = Path(tmp)
        model_dir = save_tiny_model(scratch / "model")
        store_info = build_store(scratch / "corpus", model_dir, args.tokens, args.hot_budget_mb)
        questions = scratch / "questions.jsonl"
        garbage = write_questions(questions, args.questions, args.garbage_every)
        out = scratch / "answers.jsonl"
        run = soak(scratch / "corpus" / STORE, questions, out, args.interval)
        summary = {**summarise(run, args.warmup, out), "garbage_lines": garbage}
        summary["ok"] = verdict(summary, args.questions, garbage, args.hot_budget_mb)
    result = {
        "benchmark": "soak: one `l2m batch` run, RSS / file descriptors / threads against answers",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "model": "tiny random Llama (2 layers, hidden 64, byte tokenizer)", "store": store_info,
        "questions": args.questions, "summary": summary, "run": run,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({"store": store_info, "summary": summary, "status": run["status"], "seconds": run["seconds"]},
                     indent=2))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
