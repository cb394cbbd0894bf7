"""The loss curve of a trained reader (`l2m train --task reader --out DIR`) as JSON + PNG.

    python bench/bench_reader_curve.py DIR --out bench/results/reader_pathspec.json \
        --command "l2m train --task reader ..."

The curve (mean answer-token loss on a fixed sample of training questions and on questions from held-out
documents, every `eval_every` steps) is the one `reader.json` records; this script only copies it out with
the recipe and the command that produced it, and plots it. With `--store` (the store it was trained on) it
also asks the held-out documents' generated questions (regenerated from the recipe's seed) through
`Memory.ask`, with and without the reader, and counts replies that contain the expected answer (lenient: a
long reply quoting the text contains it) and replies that are the answer.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from l2m_core.reader import CONFIG, load_reader


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    steps = [c["step"] for c in curve]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(steps, [c["train_loss"] for c in curve], "o-", label="training questions")
    if all(c["held_out_loss"] is not None for c in curve):
        ax.plot(steps, [c["held_out_loss"] for c in curve], "s-", label="held-out documents' questions")
    ax.set(xlabel="step", ylabel="answer-token cross-entropy",
           title=f"reader on {result['corpus']} ({result['base']}): {result['trained']['seconds']} s wall clock, "
                 f"{result['trained']['device']}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def held_out_answers(store: Path, reader_dir: Path, config: dict, max_new_tokens: int = 24,
                     max_questions: int | None = None) -> dict:
    """Per held-out generated question (a seeded sample of `max_questions` of them, if given): the reply without
    and with the reader; counts of replies that contain the answer and of replies that are the answer (`_bare`)."""
    from agent import Agent
    from l2m_core.training.reader_data import corpus_samples

    recipe, apart = config["recipe"], set(config["held_out_sources"])
    with Agent.from_store(store) as agent:
        memory = agent.memory
        samples = [s for s in corpus_samples(memory, recipe["seed"], recipe["per_document"]) if s.source in apart]
        if max_questions is not None and len(samples) > max_questions:
            samples = random.Random(f"{recipe['seed']}-answers").sample(samples, max_questions)
        reader, rows = load_reader(reader_dir, memory.model), []
        for s in samples:
            replies = {}
            for name, value in (("plain", None), ("reader", reader)):
                memory.reader = value
                replies[name] = memory.ask(s.question, max_new_tokens=max_new_tokens).text
            rows.append({"kind": s.kind, "question": s.question, "answer": s.answer, **replies})
        memory.reader = None
    return {"contains_answer": _count(rows, lambda answer, reply: answer.lower() in reply.lower()),
            "exact": _count(rows, lambda answer, reply: answer.lower() == _bare(reply).lower()), "rows": rows}


def _bare(reply: str) -> str:
    """A reply's first line without a trailing citation (" (file)"), quotes, backticks or full stop."""
    return reply.strip().split("\n")[0].split(" (")[0].strip(" .`'\"")


def _count(rows: list[dict], right) -> dict:
    """Per question kind and over all: questions, and replies `right(answer, reply)` without and with the reader."""
    by_kind = {kind: {"questions": sum(r["kind"] == kind for r in rows),
                      **{name: sum(right(r["answer"], r[name]) for r in rows if r["kind"] == kind)
                         for name in ("plain", "reader")}} for kind in sorted({r["kind"] for r in rows})}
    return {"all": {key: sum(h[key] for h in by_kind.values()) for key in ("questions", "plain", "reader")},
            **by_kind}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reader", type=Path, help="the reader directory (l2m train --task reader --out DIR)")
    ap.add_argument("--out", type=Path, required=True, help="JSON path; the PNG goes beside it")
    ap.add_argument("--corpus", default="", help="what the store held (for the record and the plot's title)")
    ap.add_argument("--command", default="", help="the command that trained the reader (for the record)")
    ap.add_argument("--note", default="", help="what the run does and does not show (for the record)")
    ap.add_argument("--store", type=Path, default=None,
                    help="the store the reader was trained on: also answer the held-out questions")
    ap.add_argument("--max-questions", type=int, default=None, help="answer at most this many of them")
    args = ap.parse_args(argv)
    config = json.loads((args.reader / CONFIG).read_text())
    result = {"corpus": args.corpus, "command": args.command, "note": args.note, "base": config["base"]["name"],
              **{k: config[k] for k in ("recipe", "trained", "curve", "held_out_sources", "lora")}}
    if args.store is not None:
        result["held_out_answers"] = held_out_answers(args.store, args.reader, config,
                                                      max_questions=args.max_questions)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
