"""The cold tier and the store directory: a manifest plus a database reached through SQLAlchemy.

A store is a directory holding `manifest.json` (format version, model fingerprint, settings) and, by
default, `memory.db` (SQLite in WAL mode); any SQLAlchemy URL (PostgreSQL for a team store) can hold
the tables instead. Tables: `mem_documents` (one row per ingested source), `mem_blocks` (provenance,
text and representative keys of each block) and `mem_block_kv` (each block's compressed keys and
values, one row per layer). Every write of a document happens in one transaction: a store is never
left half-written. The directory is 0700 and every file in it 0600.

The manifest records a database URL without its password. Opening takes the password from
`$L2M_DATABASE_URL` when that names the same database, else the driver finds it (PostgreSQL:
`$PGPASSWORD`, `~/.pgpass`).

Concurrency: SQLite runs in WAL mode, so readers never block the one writer; a writer waits for the
lock (busy timeout) and `transient` retries what still fails because of a lock, a deadlock or a lost
connection. Other errors are not retried.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import sqlalchemy as sa
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from l2m_core.errors import L2MError
from l2m_core.settings import MemorySettings

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

    def update_manifest(self, **changes) -> None:
        self.manifest.update(changes)
        _write_manifest(self.path, self.manifest)


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
