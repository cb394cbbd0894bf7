"""LM2 learned-memory benchmark: train the memory of the frozen default model on bAbI spread over
segments, and compare its accuracy with the same frozen model without memory. Writes JSON and a PNG.

    python bench/bench_lm2.py --time-budget 1800            # the full CPU run (~30 minutes)
    python bench/bench_lm2.py --time-budget 60 --eval-examples 16 --eval-every 0 --out bench/out/lm2_smoke.json

Every example's story lies in segments before the question, and each segment is its own forward pass,
so without memory the model sees only "Question: ...\\nAnswer:". Reported beside it: the same frozen model
with the whole story in its window (the in-context reference) and the chance rates. Two metrics: the
answer word within the greedy reply (BABILong's scoring; fair to a frozen chat model that answers in a
sentence) and exact match of the answer tokens, teacher-forced (the training curve). The training run
(checkpoint, adapter) goes to `--run-dir`, only the figures to `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from cli.train_cmd import parse_layers
from l2m_core.lm2 import MemoryAugmentedModel, attach_memory
from l2m_core.lm2.attach import default_config
from l2m_core.loading import load_model
from l2m_core.paths import l2m_home
from l2m_core.training.lm2_tasks import IGNORE, Episode, make_task
from l2m_core.training.lm2_trainer import TrainConfig, Trainer


def _parts(ep: Episode, b: int) -> tuple[list[list[int]], list[int], list[int]]:
    """(story segments, question prompt, answer) of example b, padding removed."""
    segments = [ep.input_ids[b, s][ep.attention_mask[b, s]].tolist() for s in range(ep.input_ids.shape[1])]
    question, labels = segments[-1], ep.labels[b, -1][ep.attention_mask[b, -1]].tolist()
    first = next(i for i, t in enumerate(labels) if t != IGNORE)
    return [seg for seg in segments[:-1] if seg], question[:first], question[first:]


def generated_accuracy(model: MemoryAugmentedModel, episodes: list[Episode], mode: str,
                       max_new_tokens: int = 8) -> float:
    """Share of examples whose greedy reply contains the answer word (BABILong's scoring).

    mode: `memory` (story read segment by segment into memory), `question` (the question alone, no
    memory), `context` (story and question in one window, no memory).
    """
    hits = total = 0
    decode = model.tokenizer.decode
    for ep in episodes:
        for b in range(ep.input_ids.shape[0]):
            story, prompt, answer = _parts(ep, b)
            state = None
            if mode == "memory":
                with torch.no_grad():  # segment boundaries as in training, not a fixed token count
                    state = model.initial_state(1)
                    for seg in story:
                        state = model.forward_segment(torch.tensor([seg], device=model.device), state=state).state
            elif mode == "context":
                prompt = [t for seg in story for t in seg] + prompt
            reply = decode(model.generate(prompt, state, max_new_tokens)).lower()
            hits += decode(answer).strip().lower() in reply
            total += 1
    return hits / max(total, 1)


def answer_rates(episodes: list[Episode]) -> dict[str, float]:
    """Majority-answer rate and uniform chance over the distinct answers of the eval set."""
    answers = [tuple(ep.labels[b][ep.labels[b] != IGNORE].tolist()) for ep in episodes
               for b in range(ep.input_ids.shape[0])]
    counts = Counter(answers)
    return {"majority_answer": round(counts.most_common(1)[0][1] / len(answers), 4),
            "uniform_chance": round(1 / len(counts), 4)}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = result["history"]
    reply = result["answer_in_reply"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    left.plot([h["step"] for h in history], [h["accuracy"] for h in history], "o-", label="with learned memory")
    left.axhline(result["chance"]["uniform_chance"], linestyle=":", color="grey", label="uniform chance")
    left.axhline(result["chance"]["majority_answer"], linestyle="--", color="grey", label="majority answer")
    left.set(xlabel="training step", ylabel="exact match (teacher-forced)", ylim=(0, 1),
             title=f"{result['task']}, {result['segment_len']}-token segments")
    left.legend(fontsize=8)
    names = ["question only\n(frozen)", "whole story\nin window (frozen)", "learned memory"]
    values = [reply["frozen_question_only"], reply["frozen_full_context"], reply["with_memory"]]
    right.bar(names, values, color=["grey", "lightgrey", "tab:blue"])
    right.set(ylim=(0, 1), ylabel="answer in greedy reply", title=result["model"])
    right.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="babi-qa1", help="babi-qa1..babi-qa5, or kv (key-value recall)")
    ap.add_argument("--model", default=None, help="model spec (default: the embedded default model)")
    ap.add_argument("--time-budget", type=float, default=1800, help="seconds of training (evaluation comes on top)")
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--segment-len", type=int, default=32)
    ap.add_argument("--max-segments", type=int, default=4)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--attn-dim", type=int, default=64)
    ap.add_argument("--layers", default="", help="comma-separated decoder layers that get memory [all]")
    ap.add_argument("--warmup", type=int, default=20, help="linear learning-rate warm-up steps")
    ap.add_argument("--aux-weight", type=float, default=1.0)
    ap.add_argument("--eval-examples", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default; on a busy shared CPU 1 is much faster)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/out/lm2_babi.json"))
    ap.add_argument("--run-dir", type=Path, default=None, help="checkpoint and adapter [$L2M_HOME/runs/bench-lm2]")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run in --run-dir (same options) for another --time-budget")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    torch.manual_seed(args.seed)
    memory = attach_memory(loaded.model, default_config(loaded.model, slots=args.slots, attn_dim=args.attn_dim,
                                                       layers=parse_layers(args.layers)),
                           loaded.tokenizer)
    task = make_task(args.task, loaded.tokenizer, args.segment_len,
                     **({} if args.task == "kv" else {"max_segments": args.max_segments}))
    memory.question_template, memory.segment_len = task.question_template, task.segment_len
    config = TrainConfig(steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, aux_weight=args.aux_weight,
                         eval_every=args.eval_every, eval_examples=args.eval_examples, checkpoint_every=0,
                         time_budget=args.time_budget, seed=args.seed, log_every=5, warmup=args.warmup)
    run_dir = args.run_dir or l2m_home() / "runs" / "bench-lm2"
    trainer = Trainer(memory, task, config, run_dir, resume=args.resume, base_name=loaded.name)
    eval_set = task.eval_episodes(args.eval_examples, args.batch_size)

    start = time.perf_counter()
    reply = {"frozen_question_only": generated_accuracy(memory, eval_set, "question"),
             "frozen_full_context": generated_accuracy(memory, eval_set, "context")}
    exact = {"frozen_question_only": trainer.evaluate(use_memory=False)}
    if not trainer.history:
        trainer.history.append({"step": 0, "accuracy": round(trainer.evaluate(), 4)})
    log(f"baselines ({time.perf_counter() - start:.0f} s): answer in reply {reply}, exact {exact}, "
        f"memory at step {trainer.step} {trainer.history[-1]['accuracy']}")

    first_step = trainer.step
    summary = trainer.train(lambda e: log(" ".join(f"{k}={v}" for k, v in e.items())))
    exact["with_memory"] = summary["accuracy"]
    start = time.perf_counter()
    reply["with_memory"] = generated_accuracy(memory, eval_set, "memory")
    log(f"answer in reply with memory: {reply['with_memory']} ({time.perf_counter() - start:.0f} s)")
    sample = [task.episode(args.batch_size, seed) for seed in range(5)]
    tokens_per_step = sum(int(e.attention_mask.sum()) for e in sample) / len(sample)
    result = {
        "task": task.name, "model": loaded.name, "device": str(loaded.device), "dtype": args.dtype,
        "threads": torch.get_num_threads(), "segment_len": task.segment_len, "max_segments": args.max_segments,
        "memory": memory.memory.config.to_dict(),
        "memory_parameters": sum(p.numel() for p in memory.memory.parameters()),
        "train": {"steps": summary["steps"], "seconds": summary["seconds"], "step_seconds": summary["step_seconds"],
                  "batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup, "aux_weight": args.aux_weight,
                  "time_budget": args.time_budget, "resumed_from_step": first_step,
                  "tokens_per_second": round(tokens_per_step * (summary["steps"] - first_step)
                                             / max(summary["step_seconds"], 1e-9), 1)},
        "eval_examples": sum(e.input_ids.shape[0] for e in eval_set),
        "answer_in_reply": {k: round(v, 4) for k, v in reply.items()},
        "exact_match": {k: round(v, 4) for k, v in exact.items()},
        "chance": answer_rates(eval_set),
        "history": trainer.history,
        "adapter": str(run_dir / "adapter"),
        "command": "python bench/bench_lm2.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    log(json.dumps({"answer_in_reply": result["answer_in_reply"], "exact_match": result["exact_match"],
                    "chance": result["chance"]}))
    return result


if __name__ == "__main__":
    main()
