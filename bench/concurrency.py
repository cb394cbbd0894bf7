"""Concurrent sessions on one store: two `l2m batch` askers while an `l2m ingest` writes into the same store.

The store starts with a few files; more files are added, one is changed, and they are ingested while both
askers answer questions about old and new files. Askers are stopped with Ctrl-C (SIGINT) once they have
answered a few questions after the ingest finished, which is how a user ends a long batch; a rerun would
resume it. Checked: no "database is locked" (or any other error) reaches a user, every answer record is
whole, the askers see the new files once they are in, questions asked after the ingest get the same answer
and citations from both askers, and the store verifies with every block present exactly once. How many
answers fell while the ingest was writing is measured, not required: it depends on the machine's load.

    python bench/concurrency.py --rounds 3 --out bench/out/concurrency.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.crash import STORE, check_store, cli_env, documents_in, write_corpus  # noqa: E402
from l2m_core import store as mem_tables  # noqa: E402
from l2m_core.loading import LoadedModel, load_model  # noqa: E402

ASKERS = 2
# a batch's progress line, written every 30 s on a stderr that is no terminal: how many fall depends on the load
PROGRESS_LINE = re.compile(r"answering: [\d,]+/[\d,]+ questions, .*")


def add_files(root: Path, first: int, count: int, chars: int = 1500) -> list[str]:
    """Files `new_NN.txt` with facts about vaults `first`.. (not ingested yet); their names."""
    staging = root.parent / f"staging-{first}"
    write_corpus(staging, files=first + count, chars=chars, seed=first)
    names = []
    for i in range(first, first + count):
        name = f"new_{i:02d}.txt"
        shutil.copy(staging / f"part_{i:02d}.txt", root / name)
        names.append(name)
    shutil.rmtree(staging)
    return names


def questions(path: Path, vaults: list[int], count: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Who keeps vault {vaults[i % len(vaults)]}?",
                                        "max_tokens": 4}) + "\n" for i in range(count)), encoding="utf-8")
    return path


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_until(condition, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for the sessions")
        if any(p.poll() is not None for p in procs):
            return
        time.sleep(0.05)


def session_round(root: Path, model_dir: Path, first_new: int, new_files: int, after: int = 5,
                  timeout: float = 600) -> dict:
    """Askers start; once both answer, an ingest starts of `new_files` new files and of `part_00.txt`, which
    changes (so its old blocks are retired while askers may be reading them). Once the ingest is done and each
    asker answered `after` more questions, the askers get SIGINT. Returns what every session did. The askers
    cycle through the same questions, so `after` >= the number of vaults + 1 makes them answer every question
    once the ingest is over (the first of the `after` answers may have started before the ingest ended)."""
    new = add_files(root, first_new, new_files)
    changed = root / "part_00.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + f"\nVault 0 was opened in round {first_new}.\n",
                       encoding="utf-8")
    vaults = [0, 1, *range(first_new, first_new + new_files)]
    outs = [root.parent / f"answers-{first_new}-{i}.jsonl" for i in range(ASKERS)]
    cmd = [sys.executable, "-m", "cli"]
    askers = [subprocess.Popen([*cmd, "batch", str(questions(root.parent / f"q-{first_new}-{i}.jsonl", vaults, 20_000)),
                                "--out", str(out), "--store", str(root / STORE)], cwd=root, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)
              for i, out in enumerate(outs)]
    wait_until(lambda: all(lines_in(o) for o in outs), timeout, askers)
    ingest_started = time.time()
    before = documents_in(root / STORE)
    ingest = subprocess.Popen([*cmd, "ingest", "--json"], cwd=root, env=cli_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    wait_until(lambda: documents_in(root / STORE) > before, timeout, [ingest])
    at_first_commit = [lines_in(o) for o in outs]  # from here on, the ingest is writing the other new files
    ingest_out, ingest_err = ingest.communicate(timeout=timeout)
    ingest_ended = time.time()
    at_end = [lines_in(o) for o in outs]
    wait_until(lambda: all(lines_in(o) >= n + after for o, n in zip(outs, at_end, strict=True)), timeout, askers)
    for proc in askers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    finished = [_finish(proc) for proc in askers]
    sessions = []
    after_ingest = []
    for proc, (_stdout, stderr), out, ended in zip(askers, finished, outs, at_end, strict=True):
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        sessions.append(summarise(records, proc.returncode, stderr, new))
        after_ingest += records[ended + 1:]  # record `ended` was in flight when the ingest ended
    for session, first, last in zip(sessions, at_first_commit, at_end, strict=True):
        session["answered_while_ingest_wrote"] = last - first
    report = json.loads(ingest_out) if ingest.returncode == 0 else {}
    return {"ingest": {"status": ingest.returncode, "stderr": ingest_err.strip()[-500:],
                       "ingested": report.get("ingested", []), "seconds": round(ingest_ended - ingest_started, 2)},
            "askers": sessions, "new_files": new, "changed_files": [changed.name],
            "answers_after_ingest": answers_by_question(after_ingest)}


def answers_by_question(records: list[dict]) -> dict[str, list[list]]:
    """The distinct (answer, cited source and lines) each question got; one store state gives one each."""
    found: dict[str, list[list]] = {}
    for r in records:
        if "answer" in r:
            reply = [r["answer"], sorted([c["source"], *c["lines"]] for c in r["citations"])]
            if reply not in found.setdefault(r["question"], []):
                found[r["question"]].append(reply)
    return found


def _interruptible() -> None:
    """In the child: Ctrl-C as at a terminal, even when this script runs in the background (where the shell
    made the children ignore SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finish(proc: subprocess.Popen, grace: float = 120.0) -> tuple[str, str]:
    """The output of an interrupted asker; one that does not stop within `grace` seconds is killed."""
    try:
        return proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def summarise(records: list[dict], status: int, stderr: str, new: list[str]) -> dict:
    """One asker's run: its exit, what it said besides progress, its records, how many cite the new files, its
    answer times."""
    answered = [r for r in records if "answer" in r]
    said = "\n".join(line for line in stderr.strip().splitlines() if not PROGRESS_LINE.fullmatch(line))
    totals = [r["timings"]["total_s"] for r in answered]
    return {
        "status": status, "stderr": said[-500:], "records": len(records), "answered": len(answered),
        "errors": [r.get("error") for r in records if "answer" not in r],
        "cites_new_files": sum(any(c["source"] in new for c in r["citations"]) for r in answered),
        "seconds_per_answer_median": round(statistics.median(totals), 4) if totals else None,
        "seconds_per_answer_max": round(max(totals), 4) if totals else None,
    }


def block_count_problems(store: Path, layers: int) -> list[str]:
    """Lost or duplicated blocks: each document holds ceil(tokens / block size) blocks, each with all layers."""
    manifest = json.loads((store / mem_tables.MANIFEST).read_text())
    block_size = manifest["settings"]["block_size"]
    engine = sa.create_engine(f"sqlite:///{store / mem_tables.DATABASE}")
    with engine.connect() as conn:
        docs = conn.execute(sa.select(mem_tables.documents.c.source, mem_tables.documents.c.n_tokens)).all()
        n_blocks = conn.execute(sa.select(sa.func.count()).select_from(mem_tables.blocks)).scalar_one()
        n_rows = conn.execute(sa.select(sa.func.count()).select_from(mem_tables.block_kv)).scalar_one()
    engine.dispose()
    expected = sum(math.ceil(tokens / block_size) for _, tokens in docs)
    problems = []
    if n_blocks != expected:
        problems.append(f"{n_blocks} blocks for {expected} expected")
    if n_rows != n_blocks * layers:
        problems.append(f"{n_rows} key/value rows for {n_blocks} blocks of {layers} layers")
    return problems


def round_problems(result: dict) -> list[str]:
    """Everything a round must not show (correctness only: how the sessions interleaved depends on the load)."""
    problems = []
    if result["ingest"]["status"] != 0:
        problems.append(f"ingest failed: {result['ingest']['stderr']}")
    expected = sorted(result["new_files"] + result["changed_files"])
    if sorted(result["ingest"]["ingested"]) != expected:
        problems.append(f"ingest wrote {result['ingest']['ingested']}, not {expected}")
    for number, asker in enumerate(result["askers"]):
        if asker["status"] != 130 or asker["stderr"] != "interrupted":
            problems.append(f"asker {number} ended with {asker['status']}: {asker['stderr']!r}")
        if asker["errors"] or asker["answered"] != asker["records"]:
            problems.append(f"asker {number} got errors: {asker['errors'][:3]}")
        if not asker["cites_new_files"]:
            problems.append(f"asker {number} never read the newly ingested files")
    answers = result["answers_after_ingest"]
    if len(answers) < 2:
        problems.append(f"too few questions answered after the ingest to compare: {sorted(answers)}")
    problems += [f"{question!r} got {len(replies)} different answers after the ingest: {replies}"
                 for question, replies in answers.items() if len(replies) > 1]
    return problems


def setup(scratch: Path, lm: LoadedModel) -> Path:
    """A corpus of three files, ingested (in this process)."""
    from agent import Agent

    root = write_corpus(scratch / "corpus", files=3, chars=1500)
    with Agent.open(root, model=lm) as agent:
        agent.ingest()
    return root


def run(rounds: int, new_files: int) -> dict:
    from l2m_core.tiny import save_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        scratch = Path(tmp)
        model_dir = save_tiny_model(scratch / "model")
        lm = load_model(model_dir, device="cpu")
        root = setup(scratch, lm)
        results = []
        for number in range(rounds):
            result = session_round(root, model_dir, first_new=10 + number * new_files, new_files=new_files)
            result["problems"] = round_problems(result)
            results.append(result)
            print(f"round {number + 1}/{rounds}: {result['problems'] or 'ok'}", file=sys.stderr)
        check = check_store(root / STORE, lm, questions=[])
        layers = lm.config.num_hidden_layers
        store_problems = check.verify + check.block_map + block_count_problems(root / STORE, layers)
    return {
        "benchmark": "two `l2m batch` askers while `l2m ingest` writes into the same store",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "rounds": results, "store_problems": store_problems,
        "answers": sum(a["answered"] for r in results for a in r["askers"]),
        "errors_reaching_users": sum(len(a["errors"]) for r in results for a in r["askers"]),
        "answers_while_ingest_wrote": sum(a["answered_while_ingest_wrote"] for r in results for a in r["askers"]),
        "ok": not store_problems and not any(r["problems"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-files", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "concurrency.json")
    args = parser.parse_args()
    result = run(args.rounds, args.new_files)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
