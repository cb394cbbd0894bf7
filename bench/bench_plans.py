"""Plan benchmark: plain-language edit requests -> constrained plans with the default model.

    python bench/bench_plans.py                      # writes bench/results/plans.json and plans.png
    python bench/bench_plans.py --only shop-rename-1 --out /tmp/plans.json
    python bench/bench_plans.py --replot             # recount and redraw (e.g. a run stopped part-way)

For each request of `bench/plans/requests.json` (written before the model ever saw them) on its fixture
package (`bench/plans/fixtures.py`, ingested into a fresh store) it runs the library path of `l2m edit
--apply --test "python -m pytest -q"` then `l2m undo`, and records: which path made the plan (rules or the
model), whether the plan is valid (checked by `tools.plan.make_plan`), whether it is the expected plan
(actions, names, files and defaults as Python values; a docstring's wording is free), whether the
fixture's tests pass after applying it, and whether undo restores every file byte for byte.

The model path (`agent.planner`) chooses among listed values by their likelihood (each choice is recorded
with its options' scores) and writes what no list holds under a grammar (each written reply is recorded).
Overhead, over those written replies: per token, the time llguidance's choice takes (computing the mask,
masking the logits, argmax) against plain argmax, and the whole decoding step both ways (a request's first
written prompt is decoded once more without the grammar, as many tokens).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import Agent  # noqa: E402
from agent.choices import same_value  # noqa: E402
from agent.planner import plan_task  # noqa: E402
from bench.plans.fixtures import write_fixture  # noqa: E402
from l2m_core.errors import L2MError  # noqa: E402
from l2m_core.grammar import JsonGrammar  # noqa: E402
from l2m_core.loading import load_model  # noqa: E402
from l2m_core.scoring import option_logprobs  # noqa: E402
from tools.plan import execute_plan  # noqa: E402
from tools.run import RunPolicy  # noqa: E402
from tools.toolbox import Toolbox  # noqa: E402

REQUESTS = Path(__file__).parent / "plans" / "requests.json"  # the benchmark; plans/check_requests.json: a check set
PLAN_TOKENS = 256
TEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


class Timed:
    """A token chooser that times each choice: `grammar` (constrained) or None (greedy argmax)."""

    def __init__(self, grammar: JsonGrammar | None):
        self.grammar, self.seconds = grammar, []

    def __call__(self, logits) -> int:
        start = time.perf_counter()
        token = self.grammar(logits) if self.grammar else int(logits.argmax())
        self.seconds.append(time.perf_counter() - start)
        return token


def right_plan(steps: list[dict], expected: list[dict]) -> bool:
    if len(steps) != len(expected):
        return False
    for step, want in zip(steps, expected, strict=True):
        if step["action"] != want["action"]:
            return False
        for key, value in want["args"].items():
            got = step["args"].get(key)
            if got is None or not (same_value(got, value) if key == "default" else got == value):
                return False
        if step["action"] == "add_docstring" and not step["args"].get("docstring", "").strip():
            return False
    return True


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".l2m" not in p.parts and "__pycache__" not in p.parts}


def run_request(request: dict, lm, workdir: Path) -> dict:
    root = write_fixture(request["fixture"], workdir / request["id"])
    record: dict = {"id": request["id"], "request": request["request"], "path": None, "valid": False,
                    "right": False, "green": False, "undo_restores": None}
    timing: dict = {}
    with Agent.open(root, model=lm) as agent:
        agent.ingest()
        toolbox = Toolbox(root, policy=RunPolicy(allow=True))
        before = snapshot(root)

        def ask_model(instruction: str, task: str, schema: dict) -> tuple[str, list[tuple[str, float]]]:
            grammar = JsonGrammar.for_memory(agent.memory, schema)
            constrained = Timed(grammar)
            answer = agent.memory.ask(task, instruction=instruction, max_new_tokens=PLAN_TOKENS,
                                      choose_token=constrained)
            steps = len(constrained.seconds)
            timing.setdefault("mask_s", []).extend(constrained.seconds)
            decoding = answer.timings["total_s"] - answer.timings["first_token_s"]
            timing.setdefault("step_s", []).append(decoding / steps)
            record.setdefault("written", []).append({"instruction": instruction, "reply": answer.text})
            if "argmax_s" not in timing:  # once: the prompt decoded plainly, as many tokens
                plain = Timed(None)
                free = agent.memory.ask(task, instruction=instruction, max_new_tokens=steps, choose_token=plain)
                timing.update(argmax_s=plain.seconds, unconstrained_reply=free.text[:300],
                              plain_step_s=(free.timings["total_s"] - free.timings["first_token_s"])
                              / max(1, len(plain.seconds)))
            return answer.text, grammar.pieces()

        def score(prompt: str, options) -> list[float]:
            scores = option_logprobs(lm.model, lm.tokenizer, prompt, options)
            record.setdefault("choices", []).append(
                {"asked": prompt.rsplit("Request:", 1)[-1][-200:], "options": dict(zip(options, scores, strict=True))})
            return scores

        try:
            plan = plan_task(request["request"], toolbox.index, ask_model, toolbox.edits, score)
        except L2MError as exc:
            record["error"] = str(exc)
            return {**record, "timing": _summary(timing)}
        record.update(path=plan.source, valid=True, plan=plan.to_dict()["steps"])
        record["right"] = right_plan(record["plan"], request["expected"])
        try:
            execute_plan(toolbox.edits, plan.steps)
            outcome = toolbox.apply(TEST)
            record["green"] = bool(outcome.ok)
            record["test_tail"] = outcome.test.output[-400:] if not outcome.ok else ""
            Toolbox(root).undo()
            record["undo_restores"] = snapshot(root) == before
        except L2MError as exc:
            record["error"] = str(exc)
    return {**record, "timing": _summary(timing)}


def _summary(timing: dict) -> dict:
    if not timing:
        return {}
    return {"tokens": len(timing["mask_s"]), "mask_ms_per_token": 1000 * statistics.mean(timing["mask_s"]),
            "argmax_ms_per_token": 1000 * statistics.mean(timing["argmax_s"]) if timing["argmax_s"] else None,
            "constrained_step_ms": 1000 * statistics.mean(timing["step_s"]),
            "plain_step_ms": 1000 * timing["plain_step_s"], "unconstrained_reply": timing["unconstrained_reply"]}


def totals(records: list[dict]) -> dict:
    n = len(records)
    timed = [r["timing"] for r in records if r["timing"]]
    mean = (lambda key: statistics.mean(t[key] for t in timed)) if timed else (lambda key: None)
    out = {"requests": n, **{key: sum(bool(r[key]) for r in records) / n for key in ("valid", "right", "green")},
           "applied": sum(r["undo_restores"] is not None for r in records),
           "undo_restores": sum(r["undo_restores"] is True for r in records)  # of the applied plans
           / max(1, sum(r["undo_restores"] is not None for r in records)),
           "right_and_green": sum(r["right"] and r["green"] for r in records) / n,
           "paths": {p: sum(r["path"] == p for r in records) for p in {r["path"] for r in records}},
           "mask_ms_per_token": mean("mask_ms_per_token"), "argmax_ms_per_token": mean("argmax_ms_per_token"),
           "constrained_step_ms": mean("constrained_step_ms"), "plain_step_ms": mean("plain_step_ms")}
    if timed:
        out["overhead_percent"] = 100 * (out["mask_ms_per_token"] - out["argmax_ms_per_token"]) / out["plain_step_ms"]
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result["totals"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["valid", "right", "green", "right_and_green", "undo_restores"]  # the last: of the applied plans
    left.bar(names, [t[k] for k in names], color="tab:blue")
    left.set_ylim(0, 1.05)
    left.axhline(0.8, color="gray", linestyle="--", linewidth=1)
    left.set_title(f"{t['requests']} plain-language edit requests (default model)"
                   + ("" if result.get("complete", True) else " - run stopped part-way"))
    left.tick_params(axis="x", rotation=20)
    labels = ["mask + choose", "argmax", "decode step (constrained)", "decode step (plain)"]
    values = [t["mask_ms_per_token"], t["argmax_ms_per_token"], t["constrained_step_ms"], t["plain_step_ms"]]
    right.bar(labels, [v or 0 for v in values], color=["tab:orange", "tab:green", "tab:orange", "tab:green"])
    right.set_ylabel("ms per token (CPU)")
    right.set_ylim(bottom=0)
    right.set_title(f"llguidance overhead: {t.get('overhead_percent', 0):.1f}% of a decode step")
    right.tick_params(axis="x", rotation=20)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "plans.json")
    parser.add_argument("--only", action="append", help="Run only these request ids.")
    parser.add_argument("--requests", type=Path, default=REQUESTS, help="The requests file (default: the benchmark).")
    parser.add_argument("--replot", action="store_true", help="Only redraw the PNG of an existing --out JSON.")
    args = parser.parse_args()
    if args.replot:  # totals recomputed from the records, then the PNG
        result = json.loads(args.out.read_text())
        result["totals"] = totals(result["records"])
        args.out.write_text(json.dumps(result, indent=1))
        plot(result, args.out.with_suffix(".png"))
        return
    requests = [r for r in json.loads(args.requests.read_text()) if not args.only or r["id"] in args.only]
    lm = load_model(None, device="cpu")
    started = time.time()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        records = []
        for request in requests:
            records.append(run_request(request, lm, Path(tmp)))
            r = records[-1]
            print(f"{r['id']:16} path={r['path']} valid={r['valid']} right={r['right']} green={r['green']} "
                  f"undo={r['undo_restores']} {r.get('plan') or r.get('error')}", flush=True)
            result = {"model": lm.name, "machine": platform.machine(), "python": platform.python_version(),
                      "threads": __import__("torch").get_num_threads(), "seconds": time.time() - started,
                      "complete": len(records) == len(requests), "totals": totals(records), "records": records}
            args.out.write_text(json.dumps(result, indent=1))  # after each request: a stopped run keeps its part
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result["totals"], indent=1))


if __name__ == "__main__":
    main()
