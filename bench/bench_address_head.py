"""Address head benchmark: does a learned addressing head find the needle's block where BM25 does not?

    python bench/bench_address_head.py                       # train 3 heads on the default model, evaluate
    python bench/bench_address_head.py --head DIR            # evaluate a trained head (l2m train --task address-head)

Trains heads (training/address.py, one per seed) on samples of the training novel (Pride and Prejudice),
the training pass-key templates and bAbI qa1 training stories, then measures on held-apart samples: the
other novel (Sense and Sensibility) as haystack and passage source, the test templates (other wording,
other objects) and bAbI qa1 test stories. Per family it reports addressing recall@k (a block holding the
supporting fact among the first k of the ranking over every block of the store) for BM25, the untrained
head (plain key-key maxima), the trained head, and each head fused with BM25 by reciprocal rank as the
engine fuses them; trained-head figures are means over the seeds, with their range. Also:
- the same with 8 other test samples' documents in each store (other needles, other facts), and how often
  a method ranks the sample's own supporting block above every distractor's (`needle_choice`): the test
  that a head reads the question, since a head that only spots inserted sentences scores 1/9 there;
- a control: every method given another sample's question (same family);
- the engine's own shared read set (`lexical_top_k` 4 plus neighbours) with and without the head.
Writes JSON and a PNG beside it. `--features PATH` saves the features (or reuses them: no engine check).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from l2m_core.address_head import AddressHead, load_address_head
from l2m_core.loading import load_model
from l2m_core.training.address import (
    Example,
    HaystackBlocks,
    distractors,
    evaluate,
    example,
    features,
    haystack_features,
    rankings,
    scratch_store,
    train,
)
from l2m_core.training.data import default_data_dir, make_samples, read_novel

DISTRACTORS = 8
METHODS = {"bm25": "BM25", "untrained": "untrained head (key-key max)", "head": "trained head",
           "fused_head": "BM25 + trained head (RRF)"}


def engine_check(memory, heads: list[AddressHead], samples, keys_head: AddressHead, log) -> tuple[list, dict]:
    """Test features, and whether the engine's shared read set holds a supporting block without and with
    each head (each sample's document is in the store only while it is checked)."""
    examples, plain, with_head, seconds = [], 0, [0] * len(heads), []
    for i, sample in enumerate(samples):
        ex, block_ids = example(memory, keys_head, sample, keep=True)
        try:
            wanted = {block_ids[j] for j in ex.positives}
            memory.address_head = None
            plain += bool(wanted & set(memory._shared_read_set(memory._hits(sample.question), [])))
            for h, head in enumerate(heads):
                memory.address_head = head
                start = time.perf_counter()
                with_head[h] += bool(wanted & set(memory._shared_read_set(memory._hits(sample.question), [])))
                seconds.append(time.perf_counter() - start)
        finally:
            memory.address_head = None
            memory.retire_document("sample")
        examples.append(ex)
        if (i + 1) % 20 == 0:
            log(f"test samples {i + 1}/{len(samples)}")
    n = max(1, len(samples))
    return examples, {"bm25_only": round(plain / n, 4),
                      "with_head": round(sum(with_head) / n / len(heads), 4),
                      "with_head_per_seed": [round(h / n, 4) for h in with_head],
                      "head_addressing_ms": round(1000 * sum(seconds) / max(1, len(seconds)), 1)}


def other_questions(examples: list[Example]) -> list[Example]:
    """Each example with the question (keys and text) of the next example of its family that asks something
    else: the control for a head that would only spot the inserted sentence."""
    out = []
    for i, e in enumerate(examples):
        later = [examples[(i + j) % len(examples)] for j in range(1, len(examples))]
        other = next(o for o in later if o.family == e.family and o.question != e.question)
        out.append(replace(e, question_keys=other.question_keys, question=other.question))
    return out


def needle_choice(examples: list[Example], haystack: HaystackBlocks, heads: list[AddressHead], extra: int) -> dict:
    """In stores holding `extra` distractor documents: the share of samples whose own supporting block comes
    before every distractor's supporting block (other needles, other stories' facts), per family. A method
    that spots inserted facts without reading the question scores about 1 / (extra + 1)."""
    n_hay = haystack.blocks.shape[0]
    own, others = [], []
    for i, e in enumerate(examples):
        start, theirs = n_hay + len(e.blocks), set()
        for j in distractors(examples, i, extra):
            theirs |= {start + p for p in examples[j].positives}
            start += len(examples[j].blocks)
        own.append({n_hay + p for p in e.positives})
        others.append(theirs)

    def share(rankings: list[list[int]], family: str) -> float:
        rows = [i for i, e in enumerate(examples) if e.family == family]
        first = [next((b for b in rankings[i] if b in own[i] | others[i]), None) for i in rows]
        return round(sum(b in own[i] for b, i in zip(first, rows, strict=True)) / max(1, len(rows)), 4)

    methods = rankings(examples, haystack, {str(i): h for i, h in enumerate(heads)}, extra)

    def mean(prefix: str, family: str) -> float:
        return round(sum(share(methods[f"{prefix}{i}"], family) for i in range(len(heads))) / len(heads), 4)

    return {family: {"bm25": share(methods["bm25"], family), "head": mean("", family),
                     "fused_head": mean("fused_", family), "question_blind": round(1 / (extra + 1), 4)}
            for family in sorted({e.family for e in examples})}


def over_seeds(tables: list[dict]) -> dict:
    """Recall tables of several heads as one: every figure averaged; the trained head's with its range."""
    out: dict = {}
    for group, first in tables[0].items():
        out[group] = {"samples": first["samples"]}
        for method in first:
            if method == "samples":
                continue
            runs = [t[group][method] for t in tables]
            out[group][method] = {k: round(sum(r[k] for r in runs) / len(runs), 4) for k in runs[0]}
            if len(tables) > 1 and method in ("head", "fused_head"):
                out[group][f"{method}_range"] = {k: [min(r[k] for r in runs), max(r[k] for r in runs)]
                                                 for k in runs[0]}
    return out


def save_features(path: Path, splits: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: (asdict(hay), [asdict(e) for e in examples]) for name, (hay, examples) in splits.items()}, path)


def load_features(path: Path) -> dict:
    saved = torch.load(path, weights_only=True)
    return {name: (HaystackBlocks(**hay), [Example(**e) for e in examples]) for name, (hay, examples) in saved.items()}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {"held_apart": "store: novel + the sample", "held_apart_with_distractors":
            f"store: novel + the sample + {DISTRACTORS} other samples"}
    families = [f for f in result["held_apart"] if f != "all"]
    fig, axes = plt.subplots(len(rows), len(families), figsize=(5 * len(families), 3.6 * len(rows)), sharey=True,
                             squeeze=False)
    for row, (key, title) in zip(axes, rows.items(), strict=True):
        for ax, family in zip(row, families, strict=True):
            table = result[key][family]
            for name, label in METHODS.items():
                ks = [int(k[1:]) for k in table[name]]
                line, = ax.plot(ks, list(table[name].values()), "o-", label=label)
                if f"{name}_range" in table:
                    low, high = zip(*table[f"{name}_range"].values(), strict=True)
                    ax.fill_between(ks, low, high, color=line.get_color(), alpha=0.15)
            ax.set(xscale="log", xticks=[1, 2, 4, 8], xticklabels=["1", "2", "4", "8"], ylim=(0, 1.02),
                   xlabel="k (blocks)", ylabel="recall@k", title=f"{family} ({table['samples']}): {title}")
            ax.minorticks_off()
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result['model']}: a supporting block among the top k (held-apart samples; trained: mean "
                 f"and range of {result['seeds']} seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model spec (default: the embedded default model)")
    ap.add_argument("--head", type=Path, default=None, help="evaluate this trained head instead of training")
    ap.add_argument("--run-dir", type=Path, default=None, help="save the first seed's head here")
    ap.add_argument("--seeds", type=int, default=3, help="heads trained (one per seed) on the same features")
    ap.add_argument("--train-per-family", type=int, default=100)
    ap.add_argument("--test-per-family", type=int, default=60)
    ap.add_argument("--haystack-tokens", type=int, default=8192)
    ap.add_argument("--doc-tokens", type=int, default=192, help="tokens of novel text around each needle")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the shared CPU runs best with 1)")
    ap.add_argument("--seed", type=int, default=0, help="samples' seed and the first head's")
    ap.add_argument("--out", type=Path, default=Path("bench/out/address_head.json"))
    ap.add_argument("--features", type=Path, default=None,
                    help="save the computed features here, or load them if the file exists (skips the engine check)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    data = default_data_dir()
    lm = load_model(args.model, device="cpu")
    if args.head is not None:
        heads = [load_address_head(args.head, lm.model)]
    else:
        heads = [AddressHead.for_model(lm.model, args.layers, args.rank, seed=args.seed + i) for i in range(args.seeds)]
    first = heads[0]
    untrained = AddressHead(first.layers, first.kv_heads, first.head_dim, first.rank, seed=args.seed)
    result: dict = {"model": lm.name, "threads": torch.get_num_threads(), "haystack_tokens": args.haystack_tokens,
                    "doc_tokens": args.doc_tokens, "head_config": first.config(), "seeds": len(heads)}
    cache = load_features(args.features) if args.features and args.features.is_file() else None

    with tempfile.TemporaryDirectory(prefix="bench-address-") as tmp:
        if args.head is not None:
            result["head"] = str(args.head)
        else:
            start = time.perf_counter()
            if cache:
                hay, train_examples = cache["train"]
            else:
                memory = scratch_store(Path(tmp) / "train", lm, read_novel(data, "train"), args.haystack_tokens)
                hay = haystack_features(memory, untrained)
                samples = make_samples("train", args.train_per_family, lm.tokenizer, args.doc_tokens, args.seed,
                                       data)
                train_examples = features(memory, untrained, samples,
                                          lambda i, n: i % 40 == 0 and log(f"train samples {i}/{n}"))
                memory.close()
            result["train"] = {"samples": len(train_examples), "haystack_blocks": hay.blocks.shape[0],
                               "feature_seconds": round(time.perf_counter() - start, 1), "steps": args.steps,
                               "lr": args.lr, "batch_size": args.batch_size, "temperature": args.temperature,
                               "runs": []}
            log(f"train features: {len(train_examples)} samples, {hay.blocks.shape[0]} haystack blocks, "
                f"{result['train']['feature_seconds']:.0f} s")
            for i, head in enumerate(heads):
                summary = train(head, train_examples, hay, args.steps, args.batch_size, args.lr, args.temperature,
                                seed=args.seed + i, progress=lambda e: log(json.dumps(e)))
                result["train"]["runs"].append(summary)
            result["train_set"] = over_seeds([evaluate(train_examples, hay, {"untrained": untrained, "head": h})
                                              for h in heads])["all"]
            if args.run_dir:
                first.save(args.run_dir, lm.model, lm.name, training=result["train"]["runs"][0])
                result["head"] = str(args.run_dir)

        start = time.perf_counter()
        if cache:
            test_hay, test_examples = cache["test"]
            engine = {"skipped": "features loaded from a cache; run without --features for the engine check"}
        else:
            memory = scratch_store(Path(tmp) / "test", lm, read_novel(data, "test"), args.haystack_tokens)
            test_hay = haystack_features(memory, untrained)
            samples = make_samples("test", args.test_per_family, lm.tokenizer, args.doc_tokens, args.seed, data)
            test_examples, engine = engine_check(memory, heads, samples, untrained, log)
            memory.close()
            if args.features and args.head is None:
                save_features(args.features, {"train": (hay, train_examples), "test": (test_hay, test_examples)})
        log(f"test features and engine check: {time.perf_counter() - start:.0f} s")

    def table(examples: list[Example], **kwargs) -> dict:
        return over_seeds([evaluate(examples, test_hay, {"untrained": untrained, "head": h}, **kwargs)
                           for h in heads])

    result["blocks_in_store"] = round(test_hay.blocks.shape[0] + sum(len(e.blocks) for e in test_examples)
                                      / max(1, len(test_examples)), 1)
    result["held_apart"] = table(test_examples)
    result["held_apart_with_distractors"] = table(test_examples, extra=DISTRACTORS)
    result["needle_choice"] = needle_choice(test_examples, test_hay, heads, DISTRACTORS)
    result["passkey_by_value_kind"] = table([e for e in test_examples if e.family == "passkey"], groups="kind")
    result["control_other_question"] = table(other_questions(test_examples))
    result["engine_read_set"] = engine
    result["no_supporting_block"] = sum(not e.positives for e in test_examples)
    result["notes"] = {
        "held_apart_with_distractors": f"each store also holds {DISTRACTORS} other test samples' documents "
                                       "(ones that do not name the question's names)",
        "needle_choice": "with the distractors: share of samples whose own supporting block is ranked above "
                         "every distractor's supporting block; question_blind is what ranking needles at "
                         "random among themselves scores (1 / documents); BM25 counts a miss when it ranks none",
        "control_other_question": "every method given another sample's question (same family); a head whose "
                                  "recall barely drops spots the inserted sentence rather than reading the question",
        "engine_read_set": "share of samples whose shared read set (lexical_top_k 4 + right neighbours of the "
                           "best 2, budget 12) holds a supporting block",
        "fusion": "reciprocal rank fusion (k=60) of BM25's and the head's top 8 (twice lexical_top_k)",
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["command"] = "python bench/bench_address_head.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    show = ("bm25", "untrained", "head", "fused_head")
    for key in ("held_apart", "held_apart_with_distractors", "control_other_question"):
        for family, t in result[key].items():
            log(f"{key:28} {family:8} " + "  ".join(
                f"{name} " + "/".join(f"{t[name][k]:.2f}" for k in t[name]) for name in show))
    log(f"needle choice: {result['needle_choice']}")
    log(f"engine read set: {engine}")
    return result


if __name__ == "__main__":
    main()
