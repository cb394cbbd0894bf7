"""Ingest and batch on a Ray cluster: many workers, one store whose tables live on a database server.

    from agent import Agent
    from agent.cluster import Cluster
    with Agent.open("repo", database_url="postgresql+psycopg://l2m@db/l2m") as agent:
        agent.ingest(cluster=Cluster("head-node:6379", workers=8))

Ingest: the driver scans and indexes as always and decides which files are new or changed; Ray actors,
each loading the model once, encode documents (the slow part) in parallel and write their blocks into
the store's database; the driver commits the index. Writes happen in the driver's order, one document
at a time, each in one transaction (`Memory.write_encoded`): block ids therefore grow in the same order
as in a single-process ingest, so the stored blocks and the answers are the same. A worker that dies
loses only documents not yet committed; they are encoded again by a fresh worker, and a document whose
commit landed before the death is recognised by its text and not written twice.

Batch: questions are sharded over actors that each open the same store; answers come back in input
order (`Agent.ask_many`).

Ray is optional (`pip install 'l2m[cluster]'`) and imported only here. Every node needs l2m and the
model installed; workers reach the database with the URL the driver used (password included), passed
as an actor argument, never in the manifest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2m_core.errors import L2MError
from l2m_core.loading import DEFAULT_MODEL, LoadedModel
from l2m_core.memory import Answer, BlockSpan, Memory
from l2m_core.store import DATABASE_URL_ENV, MANIFEST, create_private_file

RAY_ADDRESS_ENV = "L2M_RAY_ADDRESS"
INSTALL_HINT = "pip install 'l2m[cluster]'"
CONNECT_TIMEOUT_S = 10
MAX_WORKER_DEATHS = 3  # per document: past that, the document is reported as failed
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Cluster:
    """Where and how wide to run: a Ray address (`host:port`, or `auto` for the cluster this machine is in),
    the number of worker actors, and what each one reserves (a GPU node: `gpus_per_worker=1`)."""

    address: str
    workers: int = 2
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0

    def __post_init__(self):
        if self.workers < 1:
            raise L2MError(f"--workers must be at least 1 (got {self.workers})")


def check_ray() -> None:
    """Ray's absence as one line saying how to install it (without importing Ray: see `import_ray`)."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except ImportError:
        found = False
    if not found:
        raise L2MError(f"running on a Ray cluster needs Ray: {INSTALL_HINT}")


def import_ray(address: str):
    """Ray, imported for a cluster at `address`. For a head on the loopback interface (one machine), Ray is
    told before its import, when it reads the setting, to keep every endpoint there: otherwise it advertises
    the machine's external address and the driver waits for a node that never answers there."""
    check_ray()
    if address.rsplit(":", 1)[0] in _LOOPBACK:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise L2MError(f"running on a Ray cluster needs Ray: {INSTALL_HINT}") from None
    return ray


def server_url(memory: Memory) -> str:
    """The store's database URL with its password, for workers; a store in a SQLite file is refused."""
    engine = memory.files.engine
    if engine.dialect.name == "sqlite":
        raise L2MError(f"the store {memory.files.path} keeps its tables in a SQLite file on this machine; cluster "
                       "workers write into a database server: create the store with --database-url "
                       "postgresql+psycopg://USER@HOST/DB")
    return engine.url.render_as_string(hide_password=False)


def model_spec(lm: LoadedModel) -> str | None:
    """What workers pass to `load_model` to get the driver's model (None: the embedded default)."""
    return None if lm.name == DEFAULT_MODEL else lm.name


# ---- actors (instantiated through Ray only) -----------------------------------------------------------


class _StoreWorker:
    """An actor's store: a private copy of the manifest in a temporary directory, the tables on the server."""

    def __init__(self, manifest: dict, database_url: str, model: str | None, device: str, threads: int,
                 dtype: str = "auto"):
        import torch

        from l2m_core.loading import load_model

        torch.set_num_threads(max(1, threads))
        os.environ[DATABASE_URL_ENV] = database_url  # where opening the store finds the password
        self.directory = Path(tempfile.mkdtemp(prefix="l2m-worker-"))
        create_private_file(self.directory / MANIFEST)
        (self.directory / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        self.lm = load_model(model, device=device, dtype=dtype)

    def pid(self) -> int:
        return os.getpid()

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class _EncodeWorker(_StoreWorker):
    """Encodes documents and, when the driver says it is their turn, writes them (`write` runs in its own
    concurrency group, so a write never waits behind the next document's encoding)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.memory = Memory.open(self.directory, self.lm, index=False)
        self.encoded = {}

    def encode(self, text: str, source: str) -> int:
        self.encoded[source] = self.memory.encode_document(text, source)
        return self.encoded[source].n_tokens

    def write(self, source: str) -> list[BlockSpan]:
        return self.memory.write_encoded(self.encoded.pop(source))


class _AskWorker(_StoreWorker):
    """Answers questions from the store, as `Agent.ask` does (names in the question pin their blocks)."""

    def __init__(self, *args, address_head: str | None = None):
        from agent.core import Agent
        from l2m_core.address_head import load_address_head
        from repos_index.index import CorpusIndex

        super().__init__(*args)
        memory = Memory.open(self.directory, self.lm)
        if address_head is not None:
            memory.address_head = load_address_head(address_head, self.lm.model)
        self.agent = Agent(self.directory, memory, CorpusIndex(memory.files.engine, self.directory))

    def ask(self, question: str, max_new_tokens: int) -> Answer | Exception:
        try:
            return self.agent.ask(question, max_new_tokens=max_new_tokens)
        except (L2MError, ValueError) as exc:  # the question's own failure, reported in its place
            return exc


# ---- the driver ---------------------------------------------------------------------------------------


class RayPool:
    """A connection to the cluster and the actors started on it; `close()` ends both."""

    def __init__(self, cluster: Cluster, memory: Memory, worker_class: type, **worker_kwargs):
        url = server_url(memory)  # a SQLite store is refused before anything connects
        self.ray = import_ray(cluster.address)
        self.cluster, self.actors = cluster, []
        # CPU workers load the driver's dtype: left to `auto`, a worker with another thread count or CPU may
        # choose otherwise (bf16 vs fp32) and write states that differ from the driver's in the last bits
        device = "cuda" if cluster.gpus_per_worker else "cpu"
        dtype = "auto" if device == "cuda" else memory.lm.dtype_name
        self._args = (memory.files.manifest, url, model_spec(memory.lm), device, int(cluster.cpus_per_worker), dtype)
        self._kwargs = worker_kwargs
        self._class = self.ray.remote(num_cpus=cluster.cpus_per_worker, num_gpus=cluster.gpus_per_worker,
                                      max_restarts=0, concurrency_groups={"write": 1})(worker_class)
        self._connected_here = not self.ray.is_initialized()
        if self._connected_here:
            _connect(self.ray, cluster.address)

    def start(self, n: int) -> list:
        """`n` new actors, each with its model loaded (a worker that cannot start is an `L2MError`)."""
        actors = [self._class.remote(*self._args, **self._kwargs) for _ in range(n)]
        self.actors += actors
        try:
            self.ray.get([a.pid.remote() for a in actors])
        except self.ray.exceptions.RayError as exc:
            raise L2MError(f"a Ray worker could not start: {_last_line(exc)}") from None
        return actors

    def replace(self, dead) -> Any:
        self.actors.remove(dead)
        return self.start(1)[0]

    def close(self) -> None:
        """Each actor removes its manifest copy (a dead one cannot), then is ended."""
        for actor in self.actors:
            try:
                self.ray.get(actor.cleanup.remote(), timeout=30)
            except self.ray.exceptions.RayError:
                pass
            self.ray.kill(actor)
        self.actors = []
        if self._connected_here:
            self.ray.shutdown()


def _connect(ray, address: str) -> None:
    """Connect to the head; an address nothing listens on fails in seconds (Ray itself would keep retrying
    for minutes). Addresses that are not `host:port` (`auto`, `ray://...`) are left to Ray."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise L2MError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise L2MError(f"cannot reach the Ray cluster at {address}: {_last_line(exc)}") from None


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


@dataclass(eq=False)
class _Job:
    """One document on its way: queued, encoding (`ref` of `encode`), encoded (held by `worker`),
    writing (`ref` of `write`), then done (`result`)."""

    text: str
    source: str
    worker: Any = None
    ref: Any = None
    writing: bool = False
    result: list[BlockSpan] | Exception | None = None
    deaths: int = 0
    write_started: float = 0.0


class ClusterMemory:
    """The store as the index's `BatchMemorySink`, documents encoded and written by Ray actors. Retiring
    and listing stay with the driver's `Memory`; files with no text hold no blocks (as `_CorpusMemory`)."""

    def __init__(self, memory: Memory, cluster: Cluster):
        self.memory, self.cluster = memory, cluster
        server_url(memory)  # refuse a SQLite store before connecting to anything
        self.pool: RayPool | None = None
        self.startup_s = 0.0  # connecting and starting the workers (each loads the model), for reports
        self.write_s = 0.0    # documents being written (one at a time: the part that does not scale out)
        self._idle: list = []               # workers with no encoding in flight
        self._queue: deque[_Job] = deque()  # documents waiting for a free worker

    def retire_document(self, source: str) -> int:
        return self.memory.retire_document(source)

    def live_sources(self) -> dict[str, str]:
        return self.memory.live_sources()

    def ingest_document(self, text: str, source: str) -> list[BlockSpan]:
        (_, result), = self.ingest_documents([(text, source)])
        if isinstance(result, Exception):
            raise result
        return result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> ClusterMemory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ingest_documents(self, documents: Iterable[tuple[str, str]]
                         ) -> Iterator[tuple[str, list[BlockSpan] | Exception]]:
        """Encodings run on every worker at once, up to two documents per worker ahead of the oldest unwritten
        one; writes go one at a time in the order documents were pulled. A lost worker is replaced and every
        document it held unwritten is encoded again."""
        pending = iter(documents)
        window: deque[_Job] = deque()
        exhausted = False
        while True:
            while not exhausted and len(window) < 2 * self.cluster.workers:
                item = next(pending, None)
                if item is None:
                    exhausted = True
                    break
                window.append(_Job(*item))
                if window[-1].text.strip():
                    self._queue.append(window[-1])
                else:
                    window[-1].result = []
            if self._queue and self.pool is None:  # workers start with the first document to encode
                started = time.perf_counter()
                self.pool = RayPool(self.cluster, self.memory, _EncodeWorker)
                self._idle = self.pool.start(self.cluster.workers)
                self.startup_s = time.perf_counter() - started
            while self._idle and self._queue:
                self._encode(self._queue.popleft(), self._idle.pop())
            while window and window[0].result is not None:
                job = window.popleft()
                yield job.source, job.result
            if not window:
                if exhausted:
                    self.memory.refresh()  # the driver's index in RAM learns what the workers wrote
                    return
                continue
            if window[0].worker is not None and window[0].ref is None:  # encoded: its turn to be written
                self._write(window[0])
            calls = {job.ref: job for job in window if job.ref is not None}
            ready, _ = self.pool.ray.wait(list(calls), num_returns=1)
            self._finish(calls[ready[0]], window)

    def _encode(self, job: _Job, worker) -> None:
        job.worker, job.writing = worker, False
        job.ref = worker.encode.remote(job.text, job.source)

    def _write(self, job: _Job) -> None:
        job.writing, job.write_started = True, time.perf_counter()
        job.ref = job.worker.write.options(concurrency_group="write").remote(job.source)

    def _finish(self, job: _Job, window: deque[_Job]) -> None:
        """Take the result of `job`'s finished call."""
        ray = self.pool.ray
        ref, job.ref = job.ref, None
        try:
            value = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError):
            self._lost(job.worker, window)
            return
        except ray.exceptions.RayTaskError as exc:  # the engine refused the document
            value = exc.cause if isinstance(exc.cause, Exception) else L2MError(_last_line(exc))
        if not job.writing:
            self._idle.append(job.worker)
        if job.writing:
            self.write_s += time.perf_counter() - job.write_started
        if job.writing or isinstance(value, Exception):
            job.result = value

    def _lost(self, worker, window: deque[_Job]) -> None:
        """A worker died: the documents it held unwritten go to the front of the queue; a replacement starts."""
        lost = [job for job in window if job.worker is worker and job.result is None]
        for job in reversed(lost):
            job.worker = job.ref = None
            job.deaths += 1
            if job.deaths > MAX_WORKER_DEATHS:
                job.result = L2MError(f"{job.source}: Ray workers died {job.deaths} times while handling it")
            else:
                self._queue.appendleft(job)
        if worker in self._idle:
            self._idle.remove(worker)
        self._idle.append(self.pool.replace(worker))


def ask_on_cluster(memory: Memory, cluster: Cluster, questions: Iterable[tuple[str, int]],
                   address_head: str | Path | None = None) -> Iterator[Answer | Exception]:
    """`Agent.ask_many` on Ray workers: each `(question, max_new_tokens)` goes to the next free worker, and
    answers come back in input order. A lost worker ends the run (a batch rerun resumes where it stopped)."""
    pool = RayPool(cluster, memory, _AskWorker,
                  address_head=None if address_head is None else str(Path(address_head).resolve()))
    from ray.util import ActorPool

    try:
        actors = pool.start(cluster.workers)
        try:
            yield from ActorPool(actors).map(lambda actor, item: actor.ask.remote(*item), list(questions))
        except pool.ray.exceptions.RayError as exc:
            raise L2MError(f"a Ray worker failed: {_last_line(exc)}") from None
    finally:
        pool.close()
