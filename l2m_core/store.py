"""The cold tier and the store directory: a manifest plus a database reached through SQLAlchemy.

`StoreFiles` is the directory (manifest, database engine, copies); `ColdTier` is every read and write of
the memory tables. Nothing else in the package writes SQL against them (tests/test_layout.py checks).

A store is a directory holding `manifest.json` (format version, model fingerprint, settings) and, by
default, `memory.db` (SQLite in WAL mode); any SQLAlchemy URL (PostgreSQL for a team store) can hold
the tables instead. Tables: `mem_documents` (one row per ingested source), `mem_blocks` (provenance,
text and representative keys of each block) and `mem_block_kv` (each block's compressed keys and
values, one row per layer). A document becomes visible in one transaction (its older version goes in
the same one): a reader never sees half a document. `ColdTier.write` inserts a whole encoded document in
that transaction; `Staging` (what ingest uses) inserts its blocks while the model encodes it, under a
*pending* document row (`n_tokens` -1, a placeholder source) that every read leaves out, and the last
transaction makes it live. The directory is 0700 and every file in it 0600.

The manifest records a database URL without its password. Opening takes the password from
`$L2M_DATABASE_URL` when that names the same database, else the driver finds it (PostgreSQL:
`$PGPASSWORD`, `~/.pgpass`).

Concurrency: SQLite runs in WAL mode, so readers never block the one writer; a writer waits for the
lock (busy timeout) and `transient` retries what still fails because of a lock, a deadlock or a lost
connection. Other errors are not retried.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from l2m_core.errors import L2MError
from l2m_core.settings import MemorySettings

if TYPE_CHECKING:  # importing the store's names (the corpus index, the command line) needs no torch
    import torch

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE_DIR = ".l2m"  # a corpus's store, in its root unless told otherwise
DATABASE = "memory.db"
DATABASE_URL_ENV = "L2M_DATABASE_URL"
BUSY_TIMEOUT_MS = 30_000

metadata = sa.MetaData()
documents = sa.Table(
    "mem_documents", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source", sa.String(1024), nullable=False, unique=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("n_tokens", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sqlite_autoincrement=True,
)
blocks = sa.Table(
    "mem_blocks", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("doc_id", sa.Integer, sa.ForeignKey("mem_documents.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("n_tokens", sa.Integer, nullable=False),
    sa.Column("char_start", sa.Integer, nullable=False),
    sa.Column("char_end", sa.Integer, nullable=False),
    sa.Column("line_start", sa.Integer, nullable=False),
    sa.Column("line_end", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("repr", sa.LargeBinary, nullable=False),
    sqlite_autoincrement=True,  # ids are never reused: they order blocks and key the hot tier
)
block_kv = sa.Table(
    "mem_block_kv", metadata,
    sa.Column("block_id", sa.Integer, sa.ForeignKey("mem_blocks.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("layer", sa.Integer, primary_key=True),
    sa.Column("k", sa.LargeBinary, nullable=False),
    sa.Column("v", sa.LargeBinary, nullable=False),
)

PENDING = -1  # `n_tokens` of a document whose blocks are still being staged
LIVE = documents.c.n_tokens >= 0
PENDING_PREFIX = "\x1fpending "  # + host, process id, a random id: never a source a user gives
ABANDONED_AFTER_S = 7 * 24 * 3600  # a pending document of another machine is removed after a week
STAGED_BLOCKS = 8  # blocks per transaction while staging: one 512-token chunk's

_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_PG_RETRYABLE = {"40001", "40P01"}  # serialization failure, deadlock detected


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may go away on its own: a lock or busy database, a serialization
    failure or deadlock, a dropped connection. Integrity errors, missing tables, full disks are not."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return getattr(exc.orig, "sqlstate", None) in _PG_RETRYABLE


transient = retry(retry=retry_if_exception(is_transient), stop=stop_after_attempt(6),
                  wait=wait_exponential(multiplier=0.1, max=3), reraise=True)


def make_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite connections get WAL, a busy timeout and foreign keys.
    A malformed URL or a missing driver is an `L2MError`."""
    try:
        engine = sa.create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    except sa.exc.ArgumentError:
        raise L2MError(f"not a valid database URL: {_shown(url)}") from None
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        hint = " (pip install 'psycopg[binary]')" if url.startswith("postgres") else ""
        raise L2MError(f"no database driver for {_shown(url)}: {exc}{hint}") from None
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    return engine


def create_private_file(path: Path) -> None:
    """Make sure `path` exists and is readable by its owner only (0600), with no moment when it is not."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


class StoreFiles:
    """The directory, its manifest and its database engine."""

    def __init__(self, path: Path, manifest: dict, engine: sa.Engine):
        self.path, self.manifest, self.engine = path, manifest, engine

    @property
    def settings(self) -> MemorySettings:
        return MemorySettings.from_dict(self.manifest["settings"])

    @classmethod
    def create(cls, path: Path, model_info: dict, settings: MemorySettings, url: str | None = None) -> StoreFiles:
        """A new store at `path` (its tables in `url`, else in the directory's own SQLite file). The manifest
        is written last, so a store whose creation was interrupted is simply created again."""
        if (path / MANIFEST).exists():
            raise L2MError(f"{path} is already a memory store")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        if url is None:
            create_private_file(path / DATABASE)
        engine = make_engine(url or _sqlite_url(path))
        try:
            metadata.create_all(engine)
        except sa.exc.OperationalError as exc:
            engine.dispose()
            raise L2MError(f"cannot create the store's tables in {_shown(engine.url)}: "
                           f"{_first_line(exc.orig)}") from None
        manifest = {"format": FORMAT_VERSION, "created_at": time.time(), "database": url and _without_password(url),
                    "settings": settings.to_dict(), **model_info}
        _write_manifest(path, manifest)
        return cls(path, manifest, engine)

    @classmethod
    def open(cls, path: Path) -> StoreFiles:
        """The store at `path`; `L2MError` when it is missing, damaged, of another format or unreachable.
        Only cheap checks run here (SQLite refuses a file shorter than its header says on the first read);
        the full integrity check is `Memory.verify`."""
        if not path.is_dir():
            raise L2MError(f"no memory store at {path} (run `l2m ingest` first)")
        manifest = _read_manifest(path)
        own_file = not manifest.get("database")
        if own_file:
            if not (path / DATABASE).is_file():
                raise L2MError(f"{path} is missing its database file {DATABASE}")
            if not (path / DATABASE).stat().st_size:
                raise L2MError(f"the database file of store {path} is empty")
        engine = make_engine(_sqlite_url(path) if own_file else _with_password(manifest["database"]))
        try:
            with engine.connect() as conn:
                missing = {t.name for t in metadata.sorted_tables} - set(sa.inspect(conn).get_table_names())
                if missing:
                    raise L2MError(f"the database of store {path} lacks the tables {', '.join(sorted(missing))}")
                conn.execute(sa.select(sa.func.count()).select_from(documents)).scalar_one()
                if own_file and (path / DATABASE).stat().st_size % conn.exec_driver_sql("PRAGMA page_size").scalar():
                    raise L2MError(f"the database of store {path} is damaged or unreadable (truncated)")
        except sa.exc.OperationalError as exc:
            engine.dispose()
            if engine.dialect.name == "sqlite":
                raise L2MError(f"the database of store {path} is damaged or unreadable (OperationalError)") from None
            raise L2MError(f"cannot reach the database of store {path} ({_shown(engine.url)}): "
                           f"{_first_line(exc.orig)}") from None
        except sa.exc.DatabaseError as exc:
            engine.dispose()
            reason = type(exc.orig).__name__
            raise L2MError(f"the database of store {path} is damaged or unreadable ({reason})") from None
        except L2MError:
            engine.dispose()
            raise
        return cls(path, manifest, engine)

    def document_count(self) -> int:
        """How many documents the store holds, counted without its model."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(documents).where(LIVE)).scalar_one()

    def update_manifest(self, **changes) -> None:
        self.manifest.update(changes)
        _write_manifest(self.path, self.manifest)

    def fork(self, path: Path) -> StoreFiles:
        """A copy of this store at `path` (a store in its own SQLite file only): the database copied with
        SQLite's online backup, so a writer elsewhere never leaves the copy half-written."""
        if self.engine.dialect.name != "sqlite" or self.manifest.get("database"):
            raise L2MError("fork is only supported for stores in their own SQLite file")
        if path.exists():
            raise L2MError(f"{path} already exists")
        path.mkdir(parents=True, mode=0o700)
        create_private_file(path / DATABASE)
        with sqlite3.connect(self.path / DATABASE) as src, sqlite3.connect(path / DATABASE) as dst:
            src.backup(dst)
        shutil.copy(self.path / MANIFEST, path / MANIFEST)
        return StoreFiles.open(path)

    def database_bytes(self) -> int:
        """The size of the store's own SQLite file and its write-ahead log (0 for tables on a server)."""
        files = [self.path / f"{DATABASE}{suffix}" for suffix in ("", "-wal")]
        return sum(p.stat().st_size for p in files if p.exists())


@dataclass(frozen=True)
class BlockMeta:
    """Where a block lies: its document, its place in it (`seq`, characters, 1-based lines) and its length."""
    doc_id: int
    seq: int
    source: str
    n_tokens: int
    char_start: int
    char_end: int
    line_start: int
    line_end: int


@dataclass(frozen=True)
class BlockSpan:
    """A stored block and the lines (1-based, inclusive) of its document that it holds."""
    block_id: int
    line_start: int
    line_end: int


@dataclass(frozen=True)
class EncodedBlock:
    """A block ready to be written: provenance, text, representative keys `[L, r, Hkv, D]`, and each layer's
    compressed (keys, values) (none once `Staging.add` has written them)."""
    meta: BlockMeta
    text: str
    reprs: torch.Tensor
    kv: list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class EncodedDocument:
    """A document run through the model, ready to be written (`Memory.encode_document`, `Memory.write_encoded`):
    encoding needs only the model, writing only the database, so they can happen on different machines."""
    source: str
    sha256: str
    n_tokens: int
    blocks: list[EncodedBlock]


class Written(NamedTuple):
    """What writing a document changed: the blocks of the version it replaced, its id, its blocks' ids."""
    removed: set[int]
    doc_id: int
    block_ids: list[int]


class StoredDocument(NamedTuple):
    id: int
    sha256: str


class StoredBlock(NamedTuple):
    """A block as the in-RAM index loads it: provenance, text and representative keys (fp16 bytes)."""
    id: int
    meta: BlockMeta
    text: str
    repr: bytes


@dataclass(frozen=True)
class BlockShape:
    """What every stored block's blobs measure, given the model and the store's settings."""
    layers: int
    kv_heads: int
    head_dim: int
    repr_keys: int
    codec: str

    @property
    def repr_bytes(self) -> int:
        """The size of a block's representative keys: fp16 `[layers, repr_keys, kv_heads, head_dim]`."""
        return 2 * self.layers * self.repr_keys * self.kv_heads * self.head_dim

    def kv_bytes(self, n_tokens: int) -> int:
        """The size of one layer's compressed keys (or values) of a block of `n_tokens` tokens."""
        from l2m_core import codec  # numpy and torch: only once a store is used

        return codec.encoded_size((n_tokens, self.kv_heads, self.head_dim), self.codec)


class ColdTier:
    """The memory tables: documents written and retired one transaction each, block rows, each layer's
    compressed keys and values, block texts, the integrity check and the counts. The one place that
    reads or writes `mem_documents`, `mem_blocks` and `mem_block_kv`."""

    def __init__(self, engine: sa.Engine, shape: BlockShape):
        self.engine, self.shape = engine, shape

    def generation(self) -> tuple[int, int | None]:
        """(documents, newest document id): changes whenever any process writes or retires a document."""
        with self.engine.connect() as conn:
            return tuple(conn.execute(sa.select(sa.func.count(), sa.func.max(documents.c.id)).where(LIVE)).one())

    def blocks(self) -> Iterator[StoredBlock]:
        """Every block with its document's source, in id order (the order they were written in)."""
        query = sa.select(blocks.c.id, blocks.c.doc_id, blocks.c.seq, documents.c.source, blocks.c.n_tokens,
                          blocks.c.char_start, blocks.c.char_end, blocks.c.line_start, blocks.c.line_end,
                          blocks.c.text, blocks.c.repr).join(documents).where(LIVE).order_by(blocks.c.id)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield StoredBlock(row.id, BlockMeta(*row[1:9]), row.text, row.repr)

    def document(self, source: str) -> StoredDocument | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(documents.c.id, documents.c.sha256)
                               .where(documents.c.source == source)).first()
        return StoredDocument(*row) if row is not None else None

    def sources(self) -> dict[str, str]:
        """source -> sha256 of every stored document."""
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(documents.c.source, documents.c.sha256).where(LIVE)).all())

    def spans(self, doc_id: int) -> list[BlockSpan]:
        """A document's blocks, in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(blocks.c.id, blocks.c.line_start, blocks.c.line_end)
                                .where(blocks.c.doc_id == doc_id).order_by(blocks.c.id)).all()
        return [BlockSpan(*row) for row in rows]

    @transient
    def write(self, document: EncodedDocument, replacing: int | None) -> Written:
        """Replace document `replacing` (if any) by `document`, in one transaction."""
        with self.engine.begin() as conn:
            removed = self._delete(conn, replacing) if replacing is not None else set()
            doc_id = conn.execute(documents.insert().values(
                source=document.source, sha256=document.sha256, n_tokens=document.n_tokens,
                created_at=time.time())).inserted_primary_key[0]
            return Written(removed, doc_id, [self._insert_block(conn, doc_id, block) for block in document.blocks])

    def copy(self, source: str, new_source: str) -> int:
        """Store document `source` again as `new_source`, its blocks and keys/values unchanged, in one
        transaction; returns the copy's document id. Builds large stores from real states without running
        the model (the benchmarks' memory sizes)."""
        with self.engine.begin() as conn:
            doc = conn.execute(sa.select(documents).where(documents.c.source == source)).one()
            new = conn.execute(documents.insert().values(
                source=new_source, sha256=doc.sha256, n_tokens=doc.n_tokens,
                created_at=time.time())).inserted_primary_key[0]
            cols = [c for c in blocks.c if c.name not in ("id", "doc_id")]
            copied = sa.select(sa.literal(new), *cols).where(blocks.c.doc_id == doc.id)
            conn.execute(blocks.insert().from_select(["doc_id", *[c.name for c in cols]], copied))
            old, fresh = blocks.alias("old"), blocks.alias("fresh")
            conn.execute(block_kv.insert().from_select(
                ["block_id", "layer", "k", "v"],
                sa.select(fresh.c.id, block_kv.c.layer, block_kv.c.k, block_kv.c.v)
                .join(old, old.c.id == block_kv.c.block_id)
                .join(fresh, sa.and_(fresh.c.doc_id == new, fresh.c.seq == old.c.seq))
                .where(old.c.doc_id == doc.id)))
        return new

    def retire(self, doc_id: int) -> set[int]:
        """Delete a document and its blocks in one transaction; returns the removed block ids."""
        with self.engine.begin() as conn:
            return self._delete(conn, doc_id)

    def stage(self) -> Staging:
        """A new document to write block by block (`Staging`), after removing what dead writers left."""
        self._remove_abandoned()
        with self.engine.begin() as conn:
            doc_id = conn.execute(documents.insert().values(
                source=f"{PENDING_PREFIX}{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}", sha256="",
                n_tokens=PENDING, created_at=time.time())).inserted_primary_key[0]
        return Staging(self, doc_id)

    def _remove_abandoned(self) -> None:
        """Remove pending documents whose writer is gone: on this machine, a process that no longer runs;
        on another, any pending for over a week."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(documents.c.id, documents.c.source, documents.c.created_at)
                                .where(~LIVE)).all()
        for doc_id, source, created_at in rows:
            host, pid = source.removeprefix(PENDING_PREFIX).split(" ")[:2]
            here = host == socket.gethostname()
            if (here and not _runs(int(pid))) or (not here and time.time() - created_at > ABANDONED_AFTER_S):
                self.retire(doc_id)

    def kv(self, block_ids: Iterable[int], layer: int | None = None) -> dict[tuple[int, int], tuple[bytes, bytes]]:
        """(block id, layer) -> compressed (keys, values) of the blocks, in one query: one layer, or all."""
        query = sa.select(block_kv).where(block_kv.c.block_id.in_(list(block_ids)))
        if layer is not None:
            query = query.where(block_kv.c.layer == layer)
        with self.engine.connect() as conn:
            return {(row.block_id, row.layer): (row.k, row.v) for row in conn.execute(query)}

    def texts(self, block_ids: Iterable[int]) -> dict[int, str]:
        """The stored text of each block."""
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(blocks.c.id, blocks.c.text)
                                     .where(blocks.c.id.in_(list(block_ids)))).all())

    def counts(self) -> dict[str, int]:
        """Documents stored and the bytes their compressed keys and values take."""
        with self.engine.connect() as conn:
            n_docs = conn.execute(sa.select(sa.func.count()).select_from(documents).where(LIVE)).scalar_one()
            kv_bytes = conn.execute(sa.select(sa.func.sum(sa.func.length(block_kv.c.k) + sa.func.length(block_kv.c.v)))
                                    .select_from(block_kv).join(blocks).join(documents).where(LIVE)).scalar() or 0
        return {"documents": n_docs, "kv_bytes": kv_bytes}

    def verify(self) -> list[str]:
        """Consistency problems in the tables (empty list when sound): every block has all its layers exactly
        once with blobs of the right size, no key/value rows without a block, no block without its document,
        and every document's blocks numbered 0..n-1 once each, together holding its tokens. A SQLite file
        gets its full integrity check first (opening checks only what is cheap); its damage is reported alone."""
        problems = []
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                damage = [row for (row,) in conn.exec_driver_sql("PRAGMA integrity_check") if row != "ok"]
                if damage:
                    return [f"database file: {row}" for row in damage]
            counts = dict(conn.execute(sa.select(block_kv.c.block_id, sa.func.count())
                                       .group_by(block_kv.c.block_id)).all())
            docs = dict(conn.execute(sa.select(documents.c.id, documents.c.n_tokens)).all())  # pending: -1
            per_doc = conn.execute(sa.select(
                blocks.c.doc_id, sa.func.count(), sa.func.count(sa.distinct(blocks.c.seq)), sa.func.min(blocks.c.seq),
                sa.func.max(blocks.c.seq), sa.func.sum(blocks.c.n_tokens)).group_by(blocks.c.doc_id)).all()
            block_ids = set(conn.execute(sa.select(blocks.c.id)).scalars())
            sizes = conn.execute(sa.select(blocks.c.id, blocks.c.n_tokens, sa.func.length(blocks.c.repr),
                                           sa.func.length(block_kv.c.k), sa.func.length(block_kv.c.v))
                                 .join(block_kv, block_kv.c.block_id == blocks.c.id)).all()
        layers = self.shape.layers
        problems += [f"block {b} has {counts.get(b, 0)} layers of {layers}"
                     for b in sorted(block_ids) if counts.get(b, 0) != layers]
        problems += [f"orphan key/value rows for missing block {b}" for b in sorted(set(counts) - block_ids)]
        for doc, n, distinct, low, high, tokens in per_doc:
            if docs.get(doc) == PENDING:  # being staged (or left by a writer that died): not yet a document
                continue
            if doc not in docs:
                problems.append(f"orphan blocks of missing document {doc}")
            elif n != distinct or low != 0 or high != n - 1:
                problems.append(f"document {doc} has {n} blocks numbered {low}..{high} ({distinct} distinct)")
            elif tokens != docs[doc]:
                problems.append(f"document {doc} has {docs[doc]} tokens but its blocks hold {tokens}")
        damaged = sorted({b for b, n, r, k, v in sizes
                          if r != self.shape.repr_bytes or k != v or k != self.shape.kv_bytes(n)})
        problems += [f"block {b} has damaged keys, values or representative keys" for b in damaged]
        return problems

    def compact(self) -> None:
        """Reclaim space after retired documents (SQLite: checkpoint the WAL and VACUUM; a server's own)."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.exec_driver_sql("VACUUM")

    @staticmethod
    def _insert_block(conn: sa.Connection, doc_id: int, block: EncodedBlock) -> int:
        meta = block.meta
        block_id = conn.execute(blocks.insert().values(
            doc_id=doc_id, seq=meta.seq, n_tokens=meta.n_tokens, char_start=meta.char_start,
            char_end=meta.char_end, line_start=meta.line_start, line_end=meta.line_end, text=block.text,
            repr=block.reprs.cpu().half().numpy().tobytes())).inserted_primary_key[0]
        conn.execute(block_kv.insert(), [{"block_id": block_id, "layer": layer, "k": k, "v": v}
                                         for layer, (k, v) in enumerate(block.kv)])
        return block_id

    @staticmethod
    def _delete(conn: sa.Connection, doc_id: int) -> set[int]:
        ids = set(conn.execute(sa.select(blocks.c.id).where(blocks.c.doc_id == doc_id)).scalars())
        if ids:
            conn.execute(block_kv.delete().where(block_kv.c.block_id.in_(ids)))
            conn.execute(blocks.delete().where(blocks.c.doc_id == doc_id))
        conn.execute(documents.delete().where(documents.c.id == doc_id))
        return ids


class Staging:
    """A document written while the model encodes it (`ColdTier.stage`, used as a context manager): `add`
    inserts its blocks under a pending document row, `STAGED_BLOCKS` per short transaction, so neither RAM
    nor a temporary file holds the document's keys and values, and SQLite's log is checkpointed in small
    steps; `commit` makes the document live, replacing its older version, in one last transaction. Leaving
    the `with` block without a commit removes what was staged (and a writer that dies leaves rows that the
    next `ColdTier.stage` removes)."""

    def __init__(self, cold: ColdTier, doc_id: int):
        self.cold, self.doc_id = cold, doc_id
        self.block_ids: list[int] = []
        self._waiting: list[EncodedBlock] = []
        self._committed = False

    def add(self, block: EncodedBlock) -> None:
        self._waiting.append(block)
        if len(self._waiting) >= STAGED_BLOCKS:
            self._flush()

    def commit(self, document: EncodedDocument, replacing: int | None) -> Written:
        """Make the staged blocks `document` (its source, text hash and length), in place of `replacing`."""
        self._flush()
        removed = self._make_live(document, replacing)
        self._committed = True
        return Written(removed, self.doc_id, self.block_ids)

    @transient
    def _make_live(self, document: EncodedDocument, replacing: int | None) -> set[int]:
        with self.cold.engine.begin() as conn:
            removed = ColdTier._delete(conn, replacing) if replacing is not None else set()
            conn.execute(documents.update().where(documents.c.id == self.doc_id).values(
                source=document.source, sha256=document.sha256, n_tokens=document.n_tokens, created_at=time.time()))
        return removed

    @transient
    def _flush(self) -> None:
        with self.cold.engine.begin() as conn:
            ids = [ColdTier._insert_block(conn, self.doc_id, block) for block in self._waiting]
        self.block_ids += ids
        self._waiting.clear()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        if not self._committed:  # if even this fails, the error that got here is the one to see
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self.cold.retire(self.doc_id)


def _runs(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def is_store(path: str | Path) -> bool:
    """Whether `path` holds a store's manifest (whether the store opens is for `StoreFiles.open` to say)."""
    return (Path(path) / MANIFEST).is_file()


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path / DATABASE}"


def _without_password(url: str) -> str:
    return sa.make_url(url)._replace(password=None).render_as_string(hide_password=False)


def _with_password(recorded: str) -> str:
    """The manifest's URL, or `$L2M_DATABASE_URL` (with its password) when that names the same database."""
    given = os.environ.get(DATABASE_URL_ENV, "")
    try:
        return given if _without_password(given) == _without_password(recorded) else recorded
    except sa.exc.ArgumentError:
        return recorded


def _read_manifest(path: Path) -> dict:
    """The manifest, checked for the fields a store cannot work without."""
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise L2MError(f"{path} is not a memory store (no {MANIFEST})") from None
    except (ValueError, UnicodeDecodeError):
        raise L2MError(f"{file} is damaged (not valid JSON)") from None
    if not isinstance(manifest, dict):
        raise L2MError(f"{file} is damaged (not a JSON object)")
    if manifest.get("format") != FORMAT_VERSION:
        raise L2MError(f"{path} has store format {manifest.get('format')}; this l2m reads {FORMAT_VERSION}")
    if not isinstance(manifest.get("database"), str | None):
        raise L2MError(f"{file} is damaged (database is not a URL)")
    settings = manifest.get("settings")
    try:
        if not isinstance(settings, dict):
            raise TypeError("not an object")
        MemorySettings.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise L2MError(f"{file} is damaged (bad settings: {exc})") from None
    return manifest


def _write_manifest(path: Path, manifest: dict) -> None:
    """Replace the manifest atomically (write a private temporary file, flush it to disk, rename)."""
    tmp = path / (MANIFEST + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / MANIFEST)


def _shown(url: str | sa.URL) -> str:
    """A URL safe to print: its password masked."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"


def _first_line(exc: BaseException | None) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
