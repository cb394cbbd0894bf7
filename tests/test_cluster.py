"""Ingest and batch on a Ray cluster writing into PostgreSQL: the same store as one process, workers killed
mid-document recovered, answers in input order; without Ray or a server, one clear line.

Tests marked `cluster` need a Ray head (`L2M_TEST_RAY_ADDRESS`; `scripts/ray.sh` starts one on 127.0.0.1)
and a PostgreSQL server (`L2M_TEST_POSTGRES_URL`); .ci/run starts both. They use a tiny random model and a
handful of small files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_reliability_postgres import small  # the same small memory settings

from agent import Agent
from agent.batch import run_batch_all
from agent.cluster import Cluster, ClusterMemory
from l2m_core.errors import L2MError
from l2m_core.loading import LoadedModel, load_model
from l2m_core.store import block_kv, blocks, documents

FIXTURE = Path(__file__).parent / "fixtures" / "python"
QUESTION = "Where is class Square defined?"
NOTES = "\n".join(f"Note {i}: the {['amber', 'teal', 'plum'][i % 3]} valve {i * 11} is checked weekly."
                  for i in range(1, 30))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture
def ray_address() -> str:
    """The test head's address. Ray is not imported here: `agent.cluster.import_ray` must be first to."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'l2m[cluster]')")
    address = os.environ.get("L2M_TEST_RAY_ADDRESS")
    if not address:
        pytest.skip("L2M_TEST_RAY_ADDRESS is not set (run scripts/ray.sh to start a local Ray head and get one)")
    return address


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    shutil.copytree(FIXTURE, root)
    (root / "notes.txt").write_text(NOTES)
    (root / "empty.txt").write_text("\n")
    return root


def open_store(root: Path, tiny: LoadedModel, url: str | None, name: str) -> Agent:
    return Agent.open(root, root.parent / name, tiny, settings=small(), database_url=url)


def contents(agent: Agent) -> dict:
    """Everything the store holds, in id order: documents, blocks with their text and every layer's bytes."""
    with agent.memory.files.engine.connect() as conn:
        docs = conn.execute(sa.select(documents.c.id, documents.c.source, documents.c.sha256, documents.c.n_tokens)
                            .order_by(documents.c.id)).all()
        block_rows = conn.execute(sa.select(blocks.c.id, documents.c.source, blocks.c.seq, blocks.c.text,
                                            blocks.c.line_start, blocks.c.line_end, blocks.c.repr)
                                  .join(documents).order_by(blocks.c.id)).all()
        kv = conn.execute(sa.select(block_kv.c.block_id, block_kv.c.layer, block_kv.c.k, block_kv.c.v)
                          .order_by(block_kv.c.block_id, block_kv.c.layer)).all()
    return {"documents": [tuple(r) for r in docs], "blocks": [tuple(r) for r in block_rows],
            "kv": [tuple(r) for r in kv]}


def without_ids(state: dict) -> dict:
    """The same, ids dropped (a transaction killed mid-commit may use up PostgreSQL sequence numbers); the
    order, which reading follows, stays."""
    return {"documents": [r[1:] for r in state["documents"]], "blocks": [r[1:] for r in state["blocks"]],
            "kv": [r[1:] for r in state["kv"]]}


def answer(agent: Agent) -> dict:
    return {k: v for k, v in agent.ask(QUESTION, max_new_tokens=6).to_dict().items() if k != "timings"}


def change_files(root: Path) -> None:
    (root / "app.py").write_text((root / "app.py").read_text() + "\n# changed\n")
    (root / "extra.txt").write_text("An extra file about the amber valve.\n" * 5)
    (root / "notes.txt").unlink()


@pytest.mark.postgres
@pytest.mark.cluster
def test_two_workers_build_the_same_store_as_one_process(tiny, corpus, pg_databases, ray_address):
    one = open_store(corpus, tiny, pg_databases(), "one")
    two = open_store(corpus, tiny, pg_databases(), "two")
    with one, two:
        alone = one.ingest()
        spread = two.ingest(cluster=Cluster(ray_address, workers=2))
        assert spread.errors == {} and spread.ingested == alone.ingested
        assert len(alone.ingested) == 5 and spread.blocks_written == alone.blocks_written > 0
        assert contents(two) == contents(one)
        assert two.memory.stats()["blocks"] == one.memory.stats()["blocks"]  # the driver's index is current
        assert answer(two) == answer(one)
        assert two.memory.verify() == []

        change_files(corpus)
        alone = one.ingest()
        spread = two.ingest(cluster=Cluster(ray_address, workers=2))
        assert spread.ingested == alone.ingested and sorted(alone.ingested) == ["app.py", "extra.txt"]
        assert spread.retired == ["notes.txt"] and spread.blocks_retired == alone.blocks_retired > 0
        assert contents(two) == contents(one)
        assert answer(two) == answer(one)
        assert two.memory.verify() == []


class KillingMemory(ClusterMemory):
    """Kills (SIGKILL) the worker holding a document at a chosen moment, once per document named."""

    def __init__(self, *args, before_write=(), during_encode=(), during_write=()):
        super().__init__(*args)
        self.plan = {"write": set(before_write), "encode": set(during_encode), "writing": set(during_write)}
        self.killed: list[str] = []

    def _due(self, moment: str, job) -> int | None:
        """The pid of the job's worker when it is to be killed at `moment` (asked in the write group, which
        is free while the worker encodes), else None."""
        if job.source not in self.plan[moment]:
            return None
        self.plan[moment].discard(job.source)
        self.killed.append(f"{moment}:{job.source}")
        return self.pool.ray.get(job.worker.pid.options(concurrency_group="write").remote())

    def _encode(self, job, worker) -> None:
        super()._encode(job, worker)
        if (pid := self._due("encode", job)) is not None:  # while encoding (or just after: lost all the same)
            os.kill(pid, signal.SIGKILL)

    def _write(self, job) -> None:
        if (pid := self._due("write", job)) is not None:  # encoded, held by the worker, not yet written
            os.kill(pid, signal.SIGKILL)
        pid = self._due("writing", job)
        super()._write(job)
        if pid is not None:  # the write's transaction may or may not have committed: either must be recovered
            os.kill(pid, signal.SIGKILL)


@pytest.mark.postgres
@pytest.mark.cluster
def test_a_worker_killed_mid_document_is_recovered_with_nothing_lost_or_doubled(tiny, corpus, pg_databases,
                                                                                ray_address):
    one = open_store(corpus, tiny, pg_databases(), "one")
    two = open_store(corpus, tiny, pg_databases(), "two")
    with one, two:
        one.ingest()
        sink = KillingMemory(two.memory, Cluster(ray_address, workers=2), during_encode=["notes.txt"],
                             before_write=["app.py"], during_write=["shapes/geometry.py"])
        with sink:
            report = two.index.update(sink, progress=False)
        assert sorted(sink.killed) == ["encode:notes.txt", "write:app.py", "writing:shapes/geometry.py"]
        assert report.errors == {} and len(report.ingested) == 5
        assert two.memory.verify() == []
        assert without_ids(contents(two)) == without_ids(contents(one))
        assert answer(two) == answer(one)
        assert two.index.memory_disagreements(two.memory) == {}


@pytest.mark.postgres
@pytest.mark.cluster
def test_batch_on_the_cluster_answers_each_question_once_in_order(tiny, corpus, pg_databases, ray_address,
                                                                   tmp_path):
    questions = [QUESTION, "What does app.py print?", "Which valve is checked weekly?", "Where is area computed?"]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([json.dumps({"id": f"q{i}", "question": q}) for i, q in enumerate(questions)]
                             + ["{not json"]) + "\n")
    with open_store(corpus, tiny, pg_databases(), "store") as agent:
        agent.ingest()

        def sequential(items):
            return (a.to_dict() for a in agent.ask_many(items))

        def on_cluster(items):
            return (a if isinstance(a, Exception) else a.to_dict()
                    for a in agent.ask_many(items, cluster=Cluster(ray_address, workers=2)))

        report = run_batch_all(on_cluster, src, tmp_path / "cluster.jsonl", max_new_tokens=5)
        run_batch_all(sequential, src, tmp_path / "alone.jsonl", max_new_tokens=5)
    assert report.answered == 4 and report.failed == ["line-5"]
    records = [json.loads(line) for line in (tmp_path / "cluster.jsonl").read_text().splitlines()]
    alone = [json.loads(line) for line in (tmp_path / "alone.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3", "line-5"]
    assert [r.get("answer") for r in records] == [r.get("answer") for r in alone]
    assert [r.get("citations") for r in records] == [r.get("citations") for r in alone]
    again = run_batch_all(on_cluster, src, tmp_path / "cluster.jsonl", max_new_tokens=5)
    assert again.skipped == 4 and again.answered == 0


def l2m(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.mark.postgres
@pytest.mark.cluster
def test_the_cli_ingests_and_batches_on_the_cluster(tiny_model_dir, corpus, pg_databases, ray_address):
    url = pg_databases()
    env = {"L2M_RAY_ADDRESS": ray_address, "L2M_DATABASE_URL": url}
    done = l2m("ingest", "--model", str(tiny_model_dir), "--workers", "2", "--json", cwd=corpus, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["ingested"]) == 5 and report["memory"]["blocks"] == report["blocks_written"] > 0
    assert l2m("memory", "verify", cwd=corpus).returncode == 0
    (corpus / "q.jsonl").write_text(json.dumps({"question": QUESTION}) + "\n")
    done = l2m("batch", "q.jsonl", "--out", "a.jsonl", "--max-tokens", "4", "--json", cwd=corpus, env=env)
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in map(json.loads, (corpus / "a.jsonl").read_text().splitlines())] == ["line-1"]


def test_without_ray_the_cluster_options_say_how_to_install_it(tiny_model_dir, corpus, tmp_path):
    blocker = tmp_path / "no-ray"  # a sitecustomize that makes Ray look not installed
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n\n\nclass NoRay:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ray':\n            raise ModuleNotFoundError(name)\n\n\n"
        "sys.meta_path.insert(0, NoRay())\n")
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), str(Path(__file__).parents[1])])}
    for args in (["ingest", "--model", str(tiny_model_dir)], ["batch", "q.jsonl", "--out", "a.jsonl"]):
        done = l2m(*args, "--ray-address", "127.0.0.1:1", cwd=corpus, env=env)
        assert done.returncode == 2 and "pip install 'l2m[cluster]'" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not (corpus / ".l2m").exists()


def test_a_sqlite_store_refuses_the_cluster_before_connecting(tiny, tiny_model_dir, corpus):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'l2m[cluster]')")
    done = l2m("ingest", "--model", str(tiny_model_dir), "--ray-address", "127.0.0.1:1", cwd=corpus)
    assert done.returncode == 2 and "--database-url" in done.stderr and not (corpus / ".l2m").exists()
    assert l2m("ingest", "--workers", "2", cwd=corpus).returncode == 2
    with open_store(corpus, tiny, None, "sqlite") as agent:
        with pytest.raises(L2MError, match="SQLite"):
            agent.ingest(cluster=Cluster("127.0.0.1:1", workers=2))
        with pytest.raises(L2MError, match="SQLite"):
            list(agent.ask_many([(QUESTION, 4)], cluster=Cluster("127.0.0.1:1", workers=2)))
    with pytest.raises(L2MError, match="at least 1"):
        Cluster("127.0.0.1:1", workers=0)


@pytest.mark.postgres
def test_an_unreachable_cluster_is_one_clear_error(tiny, corpus, pg_databases):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'l2m[cluster]')")
    with open_store(corpus, tiny, pg_databases(), "store") as agent:
        with pytest.raises(L2MError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
            agent.ingest(cluster=Cluster("127.0.0.1:1", workers=1))
        assert agent.memory.stats()["documents"] == 0
