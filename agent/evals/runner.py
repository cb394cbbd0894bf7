"""Run one task over lengths and methods into a JSON file (every sample and a summary) and a PNG plot.

All methods answer the same samples in the same run. The loop goes variant, length, method, sample:
samples of one length share a haystack, so the l2m method builds or opens one base store per length and
the baselines reuse the cached prefix of the previous prompt. The JSON is rewritten after each length,
so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.evals.generators import GENERATORS, Sample
from agent.evals.methods import L2M, METHODS, Method, MethodOptions, Prediction, make_method
from agent.evals.plots import format_length, plot_accuracy
from agent.evals.scoring import score
from l2m_core.errors import L2MError
from l2m_core.loading import LoadedModel, load_model
from l2m_core.training.data import data_dir

VISIBLE_ENOUGH = 0.5  # "needle visible": at least half the needed text (l2m: half the layers) was read


def parse_length(text: str) -> int:
    """`0K`, `4K`, `1.5K`, `1M` (K = 1024 tokens, as BABILong and RULER count) or a plain token count."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not match:
        raise L2MError(f"bad length {text!r}: use a token count or a size such as 4K, 16K, 1M")
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def parse_list(text: str) -> list[str]:
    """Items separated by commas or spaces."""
    return [item for item in re.split(r"[,\s]+", text.strip()) if item]


@dataclass
class EvalConfig:
    task: str
    lengths: list[int]
    variants: list[str] | None = None      # None: all of the task's variants
    samples: int = 5
    seed: int = 0
    model: str | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    data: Path | None = None
    haystack: str | None = None            # None: the task's default filler
    depths: list[float] | None = None      # None: spread from 10% to 90% over the samples
    out: Path | None = None                # a JSON file, or a folder for it (None: the current directory)
    quiet: bool = False
    threads: int | None = None             # torch CPU threads (None: torch's default)
    options: MethodOptions = field(default_factory=MethodOptions)

    def command(self) -> str:
        """The `l2m eval` command line that reproduces this run."""
        parts = [f"l2m eval {self.task}", f"--lengths {','.join(format_length(n) for n in self.lengths)}"]
        if self.variants:
            parts.append(f"--{'tasks' if self.task == 'babilong' else 'variants'} {','.join(self.variants)}")
        parts += [f"--samples {self.samples}", f"--seed {self.seed}", f"--methods {','.join(self.methods)}"]
        if self.model:
            parts.append(f"--model {self.model}")
        if self.haystack:
            parts.append(f"--haystack {self.haystack}")
        if self.options.hops != 1:
            parts.append(f"--hops {self.options.hops}")
        if self.depths:
            parts.append(f"--depths {','.join(f'{d:g}' for d in self.depths)}")
        if self.threads:
            parts.append(f"--threads {self.threads}")
        if self.out:
            parts.append(f"--out {self.out}")
        return " ".join(parts)


def run(config: EvalConfig, lm: LoadedModel | None = None) -> tuple[dict, Path]:
    """Run `config`; returns the results and the JSON path (the PNG plot lies beside it)."""
    if config.task not in GENERATORS:
        raise L2MError(f"unknown task {config.task!r}; choose from {', '.join(GENERATORS)}")
    if config.samples < 1:
        raise L2MError("--samples must be at least 1")
    if config.threads:
        torch.set_num_threads(config.threads)
    data = data_dir(config.data)  # before the model loads: a missing folder is a user's error, said at once
    lm = lm or load_model(config.model)
    generator = GENERATORS[config.task](lm.tokenizer, data, config.seed, config.haystack, config.depths)
    variants = config.variants or list(generator.variants)
    for variant in variants:
        generator.check_variant(variant)
    methods = [make_method(name, lm, config.options) for name in config.methods]
    out = _out_path(config)
    results = {
        "task": config.task, "command": config.command(),
        "model": {"name": lm.name, "fingerprint": lm.fingerprint, "window": lm.config.max_position_embeddings,
                  "device": str(lm.device), "dtype": lm.dtype_name,
                  "load_seconds": round(lm.load_seconds, 2)},
        "config": {"variants": variants, "lengths": config.lengths, "samples": config.samples, "seed": config.seed,
                   "threads": torch.get_num_threads(),
                   "methods": config.methods, "haystack": generator.haystack_kind,
                   "top_k": config.options.top_k, "chunk_tokens": config.options.chunk_tokens,
                   "part_tokens": config.options.part_tokens, "hops": config.options.hops,
                   "memory_settings": next((repr(m.stores.settings) for m in methods if isinstance(m, L2M)), None)},
        "started": _now(), "finished": None, "records": [], "setup": [], "summary": [],
    }
    total = len(variants) * len(config.lengths) * len(methods) * config.samples
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), disable=config.quiet)
    try:
        with progress:
            bar = progress.add_task(config.task, total=total)
            for variant in variants:
                for length in config.lengths:
                    samples = generator.samples(variant, length, config.samples)
                    for method in methods:
                        progress.update(bar, description=f"{variant} {format_length(length)} {method.name}")
                        _run_method(method, samples, results, lambda: progress.advance(bar))
                    results["summary"] = summarize(results["records"], results["setup"])
                    _write(out, results)
    finally:
        for method in methods:
            method.close()
    results["finished"] = _now()
    _write(out, results)
    plot_accuracy(results, out.with_suffix(".png"))
    return results, out


def _run_method(method: Method, samples: list[Sample], results: dict, advance) -> None:
    setup = method.setup_seconds
    for sample in samples:
        results["records"].append(record(sample, method.name, method.answer(sample)))
        advance()
    results["setup"].append({"variant": samples[0].variant, "length": samples[0].length, "method": method.name,
                             "seconds": round(method.setup_seconds - setup, 3)})


def record(sample: Sample, method: str, prediction: Prediction) -> dict:
    """One sample's line in the results: what was asked, where the needles were, what came back."""
    return {
        "variant": sample.variant, "length": sample.length, "index": sample.index, "method": method,
        "status": prediction.status, "note": prediction.note,
        "score": score(sample, prediction.text) if prediction.status == "ok" else None,
        "prediction": prediction.text, "answers": sample.answers, "question": sample.question,
        "depths": [round(d, 4) for d, ins in zip(sample.depths, sample.insertions, strict=True) if ins.key],
        "needles": len(sample.insertions), "context_tokens": sample.context_tokens,
        "prompt_tokens": prediction.prompt_tokens, "seconds": round(prediction.seconds, 3),
        "visible": prediction.visible, **prediction.detail,
    }


def summarize(records: list[dict], setup: list[dict]) -> list[dict]:
    """Accuracy, visibility and time per (variant, method, length)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["variant"], r["method"], r["length"]), []).append(r)
    setup_seconds = {(s["variant"], s["method"], s["length"]): s["seconds"] for s in setup}
    rows = []
    for (variant, method, length), group in groups.items():
        ok = [r for r in group if r["status"] == "ok"]
        seen = [r for r in ok if r["visible"] is not None and r["visible"] >= VISIBLE_ENOUGH]
        rows.append({
            "variant": variant, "method": method, "length": length, "samples": len(group), "scored": len(ok),
            "skipped": sum(r["status"] == "skipped" for r in group),
            "errors": sum(r["status"] == "error" for r in group),
            "accuracy": _mean(r["score"] for r in ok),
            "visible": _mean(r["visible"] for r in ok if r["visible"] is not None),
            "accuracy_if_visible": _mean(r["score"] for r in seen),
            "lexical": _mean(r["lexical"] for r in ok if "lexical" in r),
            "seconds": _mean(r["seconds"] for r in ok),
            "setup_seconds": setup_seconds.get((variant, method, length), 0.0),
            "total_seconds": round(sum(r["seconds"] for r in group)
                                   + setup_seconds.get((variant, method, length), 0.0), 3),
        })
    return rows


def _mean(values) -> float | None:
    values = list(values)
    return round(mean(values), 4) if values else None


def _out_path(config: EvalConfig) -> Path:
    out = Path(config.out) if config.out else Path.cwd()
    if out.suffix != ".json":
        out = out / f"{config.task}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _write(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    tmp.replace(path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
