"""The cold tier and the store directory: a manifest plus a database reached through SQLAlchemy.

A store is a directory holding `manifest.json` (format version, model fingerprint, settings) and, by
default, `memory.db` (SQLite in WAL mode); any SQLAlchemy URL can hold the tables instead. Tables:
`mem_documents` (one row per ingested source), `mem_blocks` (provenance, text and representative
keys of each block) and `mem_block_kv` (each block's compressed keys and values, one row per layer).
Every write of a document happens in one transaction: a store is never left half-written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import sqlalchemy as sa
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from l2m_core.errors import L2MError
from l2m_core.settings import MemorySettings

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

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

transient = retry(retry=retry_if_exception_type(sa.exc.OperationalError), stop=stop_after_attempt(6),
                  wait=wait_exponential(multiplier=0.1, max=3), reraise=True)


def make_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    return engine


class StoreFiles:
    """The directory, its manifest and its database engine."""

    def __init__(self, path: Path, manifest: dict, engine: sa.Engine):
        self.path, self.manifest, self.engine = path, manifest, engine

    @property
    def settings(self) -> MemorySettings:
        return MemorySettings.from_dict(self.manifest["settings"])

    @classmethod
    def create(cls, path: Path, model_info: dict, settings: MemorySettings, url: str | None = None) -> StoreFiles:
        if (path / MANIFEST).exists():
            raise L2MError(f"{path} is already a memory store")
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        db_url = url or f"sqlite:///{path / 'memory.db'}"
        manifest = {"format": FORMAT_VERSION, "created_at": time.time(), "database": url,
                    "settings": settings.to_dict(), **model_info}
        engine = make_engine(db_url)
        metadata.create_all(engine)
        if url is None:
            os.chmod(path / "memory.db", 0o600)
        _write_manifest(path, manifest)
        return cls(path, manifest, engine)

    @classmethod
    def open(cls, path: Path) -> StoreFiles:
        if not path.is_dir():
            raise L2MError(f"no memory store at {path} (run `l2m ingest` first)")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise L2MError(f"{path} is not a memory store (no {MANIFEST})") from None
        except ValueError:
            raise L2MError(f"{path / MANIFEST} is damaged (not valid JSON)") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise L2MError(f"{path} has store format {manifest.get('format')}; this l2m reads {FORMAT_VERSION}")
        url = manifest.get("database") or f"sqlite:///{path / 'memory.db'}"
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
            raise L2MError(f"{path} is missing its database file memory.db")
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.select(sa.func.count()).select_from(documents)).scalar_one()
                if engine.dialect.name == "sqlite" and conn.exec_driver_sql("PRAGMA quick_check").scalar() != "ok":
                    raise sa.exc.DatabaseError("quick_check failed", None, Exception())
        except sa.exc.DatabaseError as exc:
            reason = type(exc.orig).__name__
            raise L2MError(f"the database of store {path} is damaged or unreadable ({reason})") from None
        return cls(path, manifest, engine)

    def update_manifest(self, **changes) -> None:
        self.manifest.update(changes)
        _write_manifest(self.path, self.manifest)


def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path / (MANIFEST + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, path / MANIFEST)
