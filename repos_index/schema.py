"""The index tables (prefixed `idx_`, so they can share a database with the memory store) and the engine.

Chunks are addressed by (file_id, ordinal) so one file's rows are written without round trips for ids;
every table carries `file_id`, so re-indexing a file deletes its rows by that one key.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)

from l2m_core.store import BUSY_TIMEOUT_MS  # one lock wait for the database the index shares with the store

metadata = MetaData()

files = Table(
    "idx_files", metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False, unique=True),
    Column("sha256", String(64), nullable=False),  # of the text as indexed and handed to memory
    Column("size", BigInteger, nullable=False),  # 64-bit on PostgreSQL too: sizes over 2 GiB,
    Column("mtime_ns", BigInteger, nullable=False),  # and nanosecond times, overflow a 32-bit integer
    Column("language", String(32), nullable=False),
    Column("lines", Integer, nullable=False),
    Column("indexed_at", Float, nullable=False),
    Column("memory_sha256", String(64)),  # the text whose blocks `idx_blocks` lists; NULL: not in memory
)

chunks = Table(
    "idx_chunks", metadata,
    Column("id", Integer, primary_key=True),
    Column("file_id", Integer, nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("parent", Integer),  # ordinal of the enclosing chunk
    Column("kind", String(32), nullable=False),
    Column("name", Text),
    Column("qualname", Text),
    Column("title", Text),
    Column("line_start", Integer, nullable=False),
    Column("line_end", Integer, nullable=False),
    Column("byte_start", Integer, nullable=False),
    Column("byte_end", Integer, nullable=False),
    UniqueConstraint("file_id", "ordinal"),
    Index("idx_chunks_name", "name"),
)

symbols = Table(
    "idx_symbols", metadata,
    Column("id", Integer, primary_key=True),
    Column("file_id", Integer, nullable=False, index=True),
    Column("chunk", Integer),
    Column("name", Text, nullable=False),
    Column("qualname", Text, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("line_start", Integer, nullable=False),
    Column("line_end", Integer, nullable=False),
    Index("idx_symbols_name", "name"),
    Index("idx_symbols_qualname", "qualname"),
)

references = Table(
    "idx_references", metadata,
    Column("id", Integer, primary_key=True),
    Column("file_id", Integer, nullable=False, index=True),
    Column("chunk", Integer),
    Column("name", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("line", Integer, nullable=False),
    Index("idx_references_name", "name"),
)

imports = Table(
    "idx_imports", metadata,
    Column("id", Integer, primary_key=True),
    Column("file_id", Integer, nullable=False, index=True),
    Column("target", Text, nullable=False),
    Column("line", Integer, nullable=False),
)

xrefs = Table(
    "idx_xrefs", metadata,
    Column("id", Integer, primary_key=True),
    Column("file_id", Integer, nullable=False, index=True),
    Column("chunk", Integer),
    Column("line", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("detail", Text),
    Column("external", Text),
    Index("idx_xrefs_target", "target"),
)

blocks = Table(
    "idx_blocks", metadata,
    Column("file_id", Integer, nullable=False, index=True),
    Column("block_id", Integer, nullable=False),
    Column("line_start", Integer, nullable=False),
    Column("line_end", Integer, nullable=False),
)

chunk_blocks = Table(
    "idx_chunk_blocks", metadata,
    Column("file_id", Integer, nullable=False),
    Column("chunk", Integer, nullable=False),
    Column("block_id", Integer, nullable=False),
    Index("idx_chunk_blocks_chunk", "file_id", "chunk"),
)

places = Table(
    "idx_places", metadata,  # where the lines of a converted document (PDF, HTML, DOCX) come from
    Column("file_id", Integer, nullable=False, index=True),
    Column("line_start", Integer, nullable=False),
    Column("line_end", Integer, nullable=False),
    Column("page", Integer),  # 1-based page of a PDF
    Column("heading", Text),  # the enclosing headings of HTML and DOCX, outermost first
)

retired = Table(
    "idx_retire_pending", metadata,
    Column("source", Text, primary_key=True),  # left memory's view of the corpus while no memory was attached
)

# What the index records about itself: "analyzer", the `chunking.ANALYZER_VERSION` its rows were written by.
meta = Table(
    "idx_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

PER_FILE_TABLES = (chunks, symbols, references, imports, xrefs, places, blocks, chunk_blocks)


def open_engine(db: str | Path | Engine) -> Engine:
    """An engine for a database URL, a SQLite file path, or an existing engine (shared with the memory store).

    SQLite connections get WAL journaling and a busy timeout, so readers never block the writer and a
    writer waits for a lock instead of failing at once.
    """
    if isinstance(db, Engine):
        engine = db
    else:
        url = str(db)
        if "://" not in url:
            Path(url).expanduser().parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{Path(url).expanduser()}"
        engine = create_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _relaxed_sync)  # safe under WAL; only on engines we own
    if engine.dialect.name == "sqlite":
        if not event.contains(engine, "connect", _busy_timeout):
            event.listen(engine, "connect", _busy_timeout)
        with engine.connect() as connection:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if engine.url.database not in (None, "", ":memory:"):
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    metadata.create_all(engine)
    return engine


def _busy_timeout(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _relaxed_sync(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()

