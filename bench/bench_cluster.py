"""Ingest throughput on a Ray cluster: one process vs 1 and 2 Ray workers, into PostgreSQL stores.

    bash scripts/ray.sh; url=$(bash scripts/postgres.sh)
    python bench/bench_cluster.py --ray-address 127.0.0.1:46379 --server-url "$url"

The same files (this repository's own Python modules, up to `--tokens` estimated tokens) are ingested into a
fresh database each time: once by one process (no Ray), then by Ray with 1 and with 2 workers (each worker
one CPU thread). Reported per run: wall seconds, the workers' start (each loads the model), and tokens/s
end to end and after start-up; each store is checked (`verify`) and compared with the single-process one.
Writes bench/results/cluster.json and cluster.png. The per-worker figures feed docs/cluster_capacity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]


def corpus(target: Path, budget_tokens: int) -> int:
    """Copy this repository's Python modules, smallest first, into `target` up to ~`budget_tokens`."""
    files = sorted((p for p in (REPO / "l2m_core").glob("*.py") if p.stat().st_size > 2000),
                   key=lambda p: p.stat().st_size)
    total = 0
    for path in files:
        if total + path.stat().st_size // 4 > budget_tokens:
            break
        shutil.copy(path, target / path.name)
        total += path.stat().st_size // 4
    return total


def run(label: str, root: Path, lm, server: str, workers: int | None, address: str,
        gpus: float) -> tuple[dict, dict]:
    from agent import Agent
    from agent.cluster import Cluster, ClusterMemory

    name = f"l2m_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    store = Path(tempfile.mkdtemp(prefix="l2m-bench-")) / "store"
    try:
        with Agent.open(root, store, lm, database_url=url) as agent:
            started = time.perf_counter()
            if workers is None:
                report = agent.ingest()
                startup = writing = 0.0
            else:
                with ClusterMemory(agent.memory, Cluster(address, workers=workers, gpus_per_worker=gpus)) as sink:
                    report = agent.index.update(sink, progress=False)
                    startup, writing = sink.startup_s, sink.write_s
            wall = time.perf_counter() - started
            stats = agent.memory.stats()
            problems = agent.memory.verify()
            rows = [(b.id, b.meta.source, b.meta.seq, b.text) for b in agent.memory.cold.blocks()]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()
        shutil.rmtree(store.parent, ignore_errors=True)
    tokens = stats["tokens"]
    result = {"label": label, "workers": workers, "documents": stats["documents"], "blocks": stats["blocks"],
              "tokens": tokens, "wall_s": round(wall, 2), "startup_s": round(startup, 2), "write_s": round(writing, 2),
              "kv_bytes": stats["kv_bytes"],
              "tokens_per_s": round(tokens / wall, 1),
              "tokens_per_s_after_startup": round(tokens / max(wall - startup, 1e-9), 1),
              "kv_bytes_per_token": stats["kv_bytes_per_token"], "verify_problems": problems,
              "errors": report.errors}
    return result, {"blocks": [tuple(r) for r in rows]}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [r["label"] for r in results]
    ax.bar([i - 0.2 for i in range(len(results))], [r["tokens_per_s"] for r in results], 0.4, label="end to end")
    ax.bar([i + 0.2 for i in range(len(results))], [r["tokens_per_s_after_startup"] for r in results], 0.4,
           label="after worker start-up")
    ax.set_xticks(range(len(results)), labels)
    ax.set_ylabel("tokens / s")
    ax.set_title(f"Ingest throughput, {results[0]['tokens']} tokens, {os.cpu_count()} shared CPU cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-address", default=os.environ.get("L2M_RAY_ADDRESS"), required=False)
    parser.add_argument("--server-url", required=True, help="a PostgreSQL server URL allowed to create databases")
    parser.add_argument("--model", default=None, help="model spec (default: the embedded default model)")
    parser.add_argument("--tokens", type=int, default=6000, help="corpus size, estimated tokens")
    parser.add_argument("--gpus-per-worker", type=float, default=0, help="1 on GPU nodes (workers use cuda)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cluster.json")
    args = parser.parse_args()
    if not args.ray_address:
        parser.error("--ray-address (or $L2M_RAY_ADDRESS) is required")
    from l2m_core.loading import load_model

    lm = load_model(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        root.mkdir()
        estimate = corpus(root, args.tokens)
        results, stores = [], []
        for label, workers in (("one process", None), ("Ray, 1 worker", 1), ("Ray, 2 workers", 2)):
            result, store = run(label, root, lm, args.server_url, workers, args.ray_address, args.gpus_per_worker)
            result["same_blocks_as_one_process"] = not stores or store == stores[0]
            results.append(result)
            stores.append(store)
            print(json.dumps(result))
    one = results[1]["tokens_per_s_after_startup"]
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other work",
               "model": lm.name, "estimated_corpus_tokens": estimate, "runs": results,
               "speedup_2_workers_vs_1": round(results[2]["tokens_per_s_after_startup"] / one, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    plot(results, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
