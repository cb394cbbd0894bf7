"""Crash safety of `l2m ingest`: kill -9 at random moments, rerun, and check the store and the answers.

One uninterrupted ingest of a small corpus gives the reference answers and the length of its writing
phase. Then, for each kill, a fresh copy of the corpus is ingested and the process is sent SIGKILL at a
random moment of its memory writes (after a random number of committed documents, a random part of one
document's writing time). Right after the kill the store must hold only whole documents (nothing
half-written); the rerun must finish the ingest; `l2m memory verify` must pass; a deeper check of the
block map (`block_map_problems`) must find nothing; and the answers must equal the reference ones.
A tiny random model keeps it fast: the mechanics, not the model, are under test.

    python bench/crash.py --kills 20 --out bench/out/crash.json     # also writes bench/out/crash.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l2m_core import store as mem_tables  # noqa: E402
from l2m_core.loading import LoadedModel, load_model  # noqa: E402
from repos_index import schema as idx_tables  # noqa: E402

NOVEL = REPO.parent / "shared" / "data" / "haystack" / "pride.txt"
KEEPERS = ["Ada", "Boris", "Chiara", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
QUESTIONS = ["Who keeps vault 2?", "Who keeps vault 5?", "Which vault does Ada keep?"]
STORE = mem_tables.STORE_DIR


def cli_env() -> dict[str, str]:
    """The environment for `python -m cli`: this checkout first on the path, offline, quiet tokenizers."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def l2m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True)


def write_corpus(root: Path, files: int = 6, chars: int = 1200, seed: int = 0) -> Path:
    """`files` slices of a novel, each holding one fact ("vault N is kept by NAME"), plus a small module."""
    text = NOVEL.read_text(encoding="utf-8")
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        start = rng.randrange(0, len(text) - chars)
        body = text[start:start + chars]
        cut = len(body) // 2
        fact = f"\nVault {i} is kept by {KEEPERS[i % len(KEEPERS)]}.\n"
        (root / f"part_{i:02d}.txt").write_text(body[:cut] + fact + body[cut:], encoding="utf-8")
    (root / "vaults.py").write_text("".join(f"def keeper_of_vault_{i}():\n    return {KEEPERS[i % len(KEEPERS)]!r}\n\n"
                                            for i in range(files)), encoding="utf-8")
    return root


def start_ingest(root: Path, model_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", "ingest", "--model", str(model_dir), "--json"], cwd=root,
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_store(proc: subprocess.Popen, root: Path, timeout: float = 300.0) -> float:
    """Block until the ingest has created its store (its writing phase starts); return that moment."""
    deadline = time.monotonic() + timeout
    while not mem_tables.is_store(root / STORE) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return time.monotonic()


def writing_phase_seconds(root: Path, model_dir: Path) -> float:
    """Run one ingest to completion; seconds from its store's creation to its exit."""
    proc = start_ingest(root, model_dir)
    began = wait_for_store(proc, root)
    if proc.wait() != 0:
        raise RuntimeError(f"the reference ingest failed with status {proc.returncode}")
    return time.monotonic() - began


def block_map_problems(engine: sa.Engine) -> list[str]:
    """What `l2m memory verify` does not look at: the index's block map against memory's blocks.

    Every indexed file that memory holds (its memory sha equals its sha) maps exactly the blocks memory
    holds for that source, each once; map rows name existing files and blocks of the same source; every
    chunk points at blocks of its own file's map.
    """
    with engine.connect() as conn:
        files = {r.id: r for r in conn.execute(sa.select(idx_tables.files.c.id, idx_tables.files.c.path,
                                                         idx_tables.files.c.sha256, idx_tables.files.c.memory_sha256))}
        mapped = conn.execute(sa.select(idx_tables.blocks.c.file_id, idx_tables.blocks.c.block_id)).all()
        chunk_map = set(conn.execute(sa.select(idx_tables.chunk_blocks.c.file_id,
                                               idx_tables.chunk_blocks.c.block_id)).all())
        owner = dict(conn.execute(sa.select(mem_tables.blocks.c.id, mem_tables.documents.c.source)
                                  .join(mem_tables.documents)).all())
    problems: list[str] = []
    pairs = Counter(tuple(row) for row in mapped)
    problems += [f"block {b} is mapped {n} times for file {f}" for (f, b), n in sorted(pairs.items()) if n > 1]
    by_file: dict[int, set[int]] = {}
    for file_id, block_id in pairs:
        by_file.setdefault(file_id, set()).add(block_id)
        if file_id not in files:
            problems.append(f"map row for missing file {file_id}")
        elif block_id not in owner:
            problems.append(f"{files[file_id].path} maps block {block_id}, which memory does not hold")
        elif owner[block_id] != files[file_id].path:
            problems.append(f"{files[file_id].path} maps block {block_id} of {owner[block_id]}")
    held: dict[str, set[int]] = {}
    for block_id, source in owner.items():
        held.setdefault(source, set()).add(block_id)
    for file_id, row in files.items():
        if row.memory_sha256 == row.sha256 and by_file.get(file_id, set()) != held.get(row.path, set()):
            problems.append(f"{row.path}: the map and memory disagree on its blocks")
    problems += [f"chunk of file {f} points at unmapped block {b}" for f, b in sorted(chunk_map - set(pairs))]
    return problems


@dataclass
class StoreCheck:
    verify: list[str]            # what `l2m memory verify` reports (memory and index disagreements)
    block_map: list[str]         # `block_map_problems`
    answers: list[dict] = field(default_factory=list)


def check_store(store: Path, lm: LoadedModel, questions: list[str] = QUESTIONS, max_new_tokens: int = 8) -> StoreCheck:
    """Open the store as the CLI does, run the checks of `l2m memory verify` and ask `questions`."""
    from agent import Agent

    with Agent.from_store(store, lm) as agent:
        verify = agent.memory.verify() + [f"{path}: {why}" for path, why in
                                          agent.index.memory_disagreements(agent.memory).items()]
        answers = [comparable(agent.ask(q, max_new_tokens=max_new_tokens).to_dict()) for q in questions]
        return StoreCheck(verify, block_map_problems(agent.memory.files.engine), answers)


def comparable(answer: dict) -> dict:
    """What a user sees of an answer: its text and its citations (timings vary from run to run)."""
    return {"answer": answer["answer"], "citations": answer["citations"]}


def memory_problems(store: Path, lm: LoadedModel) -> list[str] | None:
    """Memory's own consistency right after a kill (None: the kill came before the store existed)."""
    from l2m_core.memory import Memory

    if not mem_tables.is_store(store):
        return None
    with Memory.open(store, lm) as memory:
        return memory.verify()


def documents_in(store: Path) -> int:
    if not (store / mem_tables.DATABASE).is_file():
        return 0
    engine = sa.create_engine(f"sqlite:///{store / mem_tables.DATABASE}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(mem_tables.documents)).scalar_one()
    except sa.exc.OperationalError:  # killed before the tables were created
        return 0
    finally:
        engine.dispose()


def kill_and_resume(corpus: Path, scratch: Path, model_dir: Path, lm: LoadedModel, after_documents: int,
                    delay: float, reference: list[dict], cli_verify: bool) -> dict:
    """One trial: copy the corpus, start an ingest, kill it `delay` seconds after memory committed
    `after_documents` documents, rerun, check."""
    root = scratch / "corpus"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(corpus, root)
    started = time.monotonic()
    proc = start_ingest(root, model_dir)
    wait_for_store(proc, root)
    while documents_in(root / STORE) < after_documents and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = root / STORE
    at_kill = {"documents": documents_in(store), "memory_problems": memory_problems(store, lm)}
    rerun = l2m("ingest", "--model", str(model_dir), "--json", cwd=root)
    report = json.loads(rerun.stdout) if rerun.returncode == 0 else {}
    verified = l2m("memory", "verify", "--json", cwd=root) if cli_verify else None
    check = check_store(store, lm)
    return {
        "after_documents": after_documents, "delay_s": round(delay, 3), "killed": killed,
        "documents_at_kill": at_kill["documents"],
        "half_written": at_kill["memory_problems"] or [],
        "rerun_status": rerun.returncode, "rerun_error": rerun.stderr.strip()[-500:] if rerun.returncode else "",
        "rerun_ingested": report.get("ingested", []),
        "cli_verify_ok": None if verified is None else verified.returncode == 0 and json.loads(verified.stdout)["ok"],
        "verify": check.verify, "block_map": check.block_map,
        "answers_equal": check.answers == reference, "seconds": round(time.monotonic() - started, 2),
    }


def passed(trial: dict) -> bool:
    return (not trial["half_written"] and trial["rerun_status"] == 0 and trial["cli_verify_ok"] is not False
            and not trial["verify"] and not trial["block_map"] and trial["answers_equal"])


def run(kills: int, seed: int, files: int, chars: int) -> dict:
    from l2m_core.tiny import save_tiny_model

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
        scratch = Path(tmp)
        model_dir = save_tiny_model(scratch / "model")
        lm = load_model(model_dir, device="cpu")
        corpus = write_corpus(scratch / "pristine", files, chars, seed)
        reference_root = scratch / "reference"
        shutil.copytree(corpus, reference_root)
        window = writing_phase_seconds(reference_root, model_dir)
        reference = check_store(reference_root / STORE, lm)
        if reference.verify or reference.block_map:
            raise RuntimeError(f"the uninterrupted ingest is inconsistent: {reference.verify + reference.block_map}")
        tokens = reference_tokens(reference_root)
        trials = []
        for number in range(kills):
            after, delay = random_moment(rng, files + 1, window)
            trial = kill_and_resume(corpus, scratch, model_dir, lm, after, delay, reference.answers, cli_verify=True)
            trials.append(trial)
            print(f"kill {number + 1}/{kills}: {'ok' if passed(trial) else 'FAILED'} (after {after} documents "
                  f"+ {delay:.2f} s: {trial['documents_at_kill']} committed)", file=sys.stderr)
    return {
        "benchmark": "kill -9 during `l2m ingest`, then rerun",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "model": "tiny random Llama (2 layers, hidden 64, byte tokenizer)",
        "corpus": {"files": files + 1, "chars_per_text_file": chars, "tokens": tokens},
        "writing_phase_seconds": round(window, 2), "seed": seed,
        "kills": len(trials), "killed_mid_ingest": sum(t["killed"] for t in trials),
        "passed": sum(passed(t) for t in trials),
        "half_written_stores": sum(bool(t["half_written"]) for t in trials),
        "answers_equal": sum(t["answers_equal"] for t in trials),
        "trials": trials,
    }


def random_moment(rng: random.Random, documents: int, window: float) -> tuple[int, float]:
    """A moment inside the memory writes: after a random number of committed documents, a random part of
    the time one document takes."""
    return rng.randrange(documents), rng.uniform(0, window / documents)


def reference_tokens(root: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{root / STORE / mem_tables.DATABASE}")
    with engine.connect() as conn:
        tokens = conn.execute(sa.select(sa.func.sum(mem_tables.documents.c.n_tokens))).scalar_one()
    engine.dispose()
    return int(tokens or 0)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = result["trials"]
    per_document = result["writing_phase_seconds"] / result["corpus"]["files"]
    figure, axis = plt.subplots(figsize=(7, 4))
    for ok, colour, label in ((True, "#55a868", "consistent, same answers"), (False, "#c44e52", "failed")):
        chosen = [t for t in trials if passed(t) == ok]
        axis.scatter([t["after_documents"] + t["delay_s"] / per_document for t in chosen],
                     [t["documents_at_kill"] for t in chosen], color=colour, label=f"{label} ({len(chosen)})")
    axis.set_xlabel("kill -9 at (documents committed + fraction of one document's writing time)")
    axis.set_ylabel("documents committed at the kill")
    axis.set_title(f"{result['kills']} kills during `l2m ingest` of {result['corpus']['files']} files: "
                   f"{result['passed']} recovered")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--files", type=int, default=6, help="text files in the corpus (plus one module)")
    parser.add_argument("--chars", type=int, default=6000, help="characters per text file (~tokens, byte tokenizer)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "crash.json")
    args = parser.parse_args()
    result = run(args.kills, args.seed, args.files, args.chars)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))
    sys.exit(0 if result["passed"] == result["kills"] else 1)


if __name__ == "__main__":
    main()
