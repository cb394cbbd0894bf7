"""Training a reader (l2m_core/reader.py) on the real read path of a store.

Per sample, the product's addressing picks the read set of the store (distractor blocks included; the
evidence block is pinned when addressing missed it, as a question naming it would pin it), the question and
its answer attend to `[reading head | read blocks | themselves]` (`Memory.answer_logits_batch`, autograd on;
a batch's samples share one forward pass, each reading its own blocks), and the loss is the cross-entropy of
the answer's tokens and the end-of-turn token. Stored keys and values are constants; only the LoRA trains.
Samples come from `reader_data.py`; the held-out loss is measured on documents never trained on.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from l2m_core.memory import Memory
from l2m_core.reader import Reader
from l2m_core.training.reader_data import ReaderSample, ReaderSplit


@dataclass
class ReaderConfig:
    steps: int = 200
    batch_size: int = 4            # samples per optimizer step, in one forward pass
    lr: float = 1e-3
    rank: int = 8
    mlp: bool = False              # also adapt the MLP projections
    eval_every: int = 25
    eval_samples: int = 32         # held-out samples the loss is measured on
    seed: int = 0
    time_budget: float | None = None  # seconds; training stops when spent


def answer_ids(memory: Memory, answer: str) -> list[int]:
    """The answer's tokens followed by the end-of-turn token, which the reader must learn to stop with."""
    ids = memory.tokenizer(answer, add_special_tokens=False)["input_ids"]
    end = memory.tokenizer.convert_tokens_to_ids("<|im_end|>")
    return ids + ([end] if isinstance(end, int) and end >= 0 else [])


def sample_losses(memory: Memory, samples: list[ReaderSample]) -> torch.Tensor:
    """Per sample, the mean cross-entropy of its answer tokens, read through the store as `ask` reads; one
    forward pass for all of them."""
    targets = [answer_ids(memory, s.answer) for s in samples]
    items = [(s.question, target, [] if s.evidence in memory.read_set(s.question) else [s.evidence])
             for s, target in zip(samples, targets, strict=True)]
    logits = memory.answer_logits_batch(items)
    return torch.stack([F.cross_entropy(row.float(), torch.tensor(target, device=row.device))
                        for row, target in zip(logits, targets, strict=True)])


@torch.no_grad()
def mean_loss(memory: Memory, samples: list[ReaderSample], batch_size: int) -> float:
    total = sum(sample_losses(memory, samples[i:i + batch_size]).sum().item()
                for i in range(0, len(samples), batch_size))
    return total / max(1, len(samples))


def train_reader(memory: Memory, split: ReaderSplit, config: ReaderConfig, base_name: str = "",
                 progress: Callable[[dict], None] | None = None) -> tuple[Reader, dict]:
    """Train a fresh reader on `split.train`; the reader (attached to `memory`) and a summary with the
    train/held-out loss curve. The reader returned, and left as `memory.reader`, is the one evaluated with the
    lowest held-out loss (`kept_step`); with no held-out samples, the last."""
    report = progress or (lambda event: None)
    torch.manual_seed(config.seed)
    reader = Reader.fresh(memory.model, config.rank, config.mlp, base_name=base_name)
    memory.reader = reader
    memory.model.requires_grad_(False)
    params = list(reader.lora.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    rng = random.Random(f"{config.seed}-reader")
    watch = rng.sample(split.train, min(config.eval_samples, len(split.train)))
    held = random.Random(f"{config.seed}-held").sample(split.held_out, min(config.eval_samples, len(split.held_out)))
    curve: list[dict] = []
    kept: dict = {}  # the evaluation with the lowest held-out loss so far, and the LoRA's weights then

    def record(step: int) -> None:
        curve.append({"step": step, "train_loss": round(mean_loss(memory, watch, config.batch_size), 4),
                      "held_out_loss": round(mean_loss(memory, held, config.batch_size), 4) if held else None})
        report({"event": "eval", **curve[-1]})
        if held and (not kept or curve[-1]["held_out_loss"] < kept["eval"]["held_out_loss"]):
            kept.update(eval=curve[-1], weights={k: v.detach().clone() for k, v in reader.lora.state_dict().items()})

    start, step = time.perf_counter(), 0
    record(0)
    while step < config.steps:
        if config.time_budget is not None and time.perf_counter() - start > config.time_budget:
            report({"event": "budget", "step": step})
            break
        optimizer.zero_grad(set_to_none=True)
        batch = [rng.choice(split.train) for _ in range(config.batch_size)]
        loss = sample_losses(memory, batch).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        report({"event": "step", "step": step, "loss": round(loss.item(), 4),
                "seconds": round(time.perf_counter() - start, 1)})
        if config.eval_every and step % config.eval_every == 0:
            record(step)
    if curve[-1]["step"] != step:
        record(step)
    if kept:  # a reader that overfits its training documents is kept as it was before it did
        reader.lora.load_state_dict(kept["weights"])
    best = kept.get("eval", curve[-1])
    for p in params:
        p.requires_grad_(False)
    kinds = sorted({s.kind for s in split.train})
    summary = {"steps": step, "kept_step": best["step"], "seconds": round(time.perf_counter() - start, 1),
               "curve": curve, "train_samples": len(split.train), "held_out_samples": len(split.held_out),
               "held_out_sources": split.held_out_sources, "kinds": kinds}
    reader.config.update({"recipe": {**asdict(config), "kinds": kinds, "settings": memory.settings.to_dict()},
                          "trained": {"device": str(memory.lm.device), **{k: summary[k] for k in (
                              "steps", "kept_step", "seconds", "train_samples", "held_out_samples")}},
                          "train_loss": best["train_loss"], "held_out_loss": best["held_out_loss"]})
    return reader, summary
