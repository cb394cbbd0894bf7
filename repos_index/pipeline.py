"""One incremental update: scan, index what changed, order, and feed memory what it lacks.

Crash safety: every file is written in its own transaction, so an interrupted run leaves each file
fully indexed or untouched. Memory is written outside any index transaction (the store may share the
database file), then the block map is committed; a file whose map was not committed is simply
ingested again on the next run: memory hands back the blocks it already holds for that text (so their
ids, which order the read set, are those of an uninterrupted run); older text is retired first. Memory's own
`live_sources()` is the truth about what it holds, which makes every run resume where the last stopped.
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import Engine, delete, insert, select, update

from l2m_core.store import transient  # the store's retry rule: the index shares its database
from repos_index import schema
from repos_index.chunking import ANALYZER_VERSION, analyze, detect_language
from repos_index.documents import BadDocument, Converted, convert, is_document
from repos_index.graph import build_graph, dependency_order, load_facts
from repos_index.memory import BatchMemorySink, BlockSpan, MemorySink
from repos_index.progress import BYTES_PER_TOKEN, IngestProgress, estimate_tokens
from repos_index.records import FileAnalysis
from repos_index.scan import DEFAULT_MAX_BYTES, UNREADABLE, ScannedFile, in_scope, scan


@dataclass
class UpdateReport:
    """What an update did. `skipped` and `warnings` map a reason to paths; `errors` a path to a message;
    `bad_documents` a PDF, HTML or DOCX file that yields no text (encrypted, image-only, damaged) to why."""

    root: str
    files_seen: int = 0
    unchanged: int = 0
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    reanalyzed: list[str] = field(default_factory=list)  # unchanged, analysed again by a newer analyser
    renamed: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    chunks_written: int = 0
    ingested: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    blocks_written: int = 0
    blocks_retired: int = 0
    approx_tokens: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    bad_documents: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def warn(self, reason: str, path: str) -> None:
        self.warnings.setdefault(reason, []).append(path)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for people: what changed, what memory got, what was left out and why."""
        lines = [
            f"{self.files_seen} files: {len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.renamed)} renamed, {len(self.deleted)} deleted, {self.unchanged} unchanged"
            + (f", {len(self.reanalyzed)} analysed again by a newer analyser" if self.reanalyzed else "")
            + (f", {len(self.bad_documents)} bad documents" if self.bad_documents else "")
            + f" ({self.chunks_written} chunks written, {self.seconds:.1f} s)"
        ]
        if self.ingested or self.retired:
            lines.append(f"memory: {len(self.ingested)} files ingested (~{self.approx_tokens:,} tokens, "
                         f"{self.blocks_written} blocks), {self.blocks_retired} blocks retired")
        for title, entries in (("skipped", self.skipped), ("warning", self.warnings)):
            for reason, paths in sorted(entries.items()):
                shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
                lines.append(f"{title} {reason} ({len(paths)}): {shown}")
        lines.extend(f"warning {path}: {why}; skipped" for path, why in sorted(self.bad_documents.items()))
        lines.extend(f"error {path}: {message}" for path, message in sorted(self.errors.items()))
        return "\n".join(lines)


class ChangedFile(Exception):
    """A file could not be read back as the text that was scanned."""


def decode(data: bytes) -> tuple[str, bool]:
    """UTF-8 text, and whether invalid bytes had to be replaced."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_text(path: Path, relative: str) -> tuple[str, bool, Converted | None]:
    """The text of a file as indexed: a document (PDF, HTML, DOCX) converted, anything else decoded; whether
    bytes had to be replaced; the conversion, with its line places, for a document. Raises OSError and
    BadDocument."""
    data = path.read_bytes()
    if is_document(relative, data):
        converted = convert(relative, data)
        return converted.text, False, converted
    text, lossy = decode(data)
    return text, lossy, None


@dataclass
class _Pending:
    """A file to (re)index. Its text is read again when indexed, so a large corpus is never held in memory."""

    scanned: ScannedFile
    sha: str
    file_id: int | None  # the row it replaces


class Updater:
    """Runs one update of the index at `root` (see `CorpusIndex.update`)."""

    def __init__(
        self, engine: Engine, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, extra_ignores: tuple[str, ...] = ()
    ) -> None:
        self.engine = engine
        self.root = root
        self.max_bytes = max_bytes
        self.extra_ignores = extra_ignores

    def run(self, memory: MemorySink | None, paths: list[str] | None, progress: bool) -> UpdateReport:
        started = time.perf_counter()
        result = scan(self.root, self.max_bytes, self.extra_ignores, only=paths)
        report = UpdateReport(root=str(self.root), files_seen=len(result.files), skipped=result.skipped)
        for requested in result.scope if result.scope is not None else [""]:
            if not any(in_scope(f.path, [requested]) for f in result.files):
                report.warn("nothing_to_index", requested or ".")
        stale = self._analyzer() != ANALYZER_VERSION
        with IngestProgress(progress) as bar:
            pending = self._detect_changes(result.files, result.scope, report, stale)
            if pending:
                bar.phase("indexing", len(pending), len(pending), "files")
            for item in pending:
                self._index_file(item, report)
                bar.advance()
            if stale and (result.scope is None or "" in result.scope) and not report.errors:  # the whole tree
                self._set_analyzer()
            if memory is not None:
                self._feed_memory(memory, result.scope, report, bar)
        report.seconds = time.perf_counter() - started
        return report

    # -- the index -----------------------------------------------------------------------------------

    def _analyzer(self) -> str | None:
        """The analyser version the index's rows were written by (None: before versions were kept)."""
        with self.engine.connect() as conn:
            return conn.scalar(select(schema.meta.c.value).where(schema.meta.c.key == "analyzer"))

    @transient
    def _set_analyzer(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(schema.meta).where(schema.meta.c.key == "analyzer"))
            conn.execute(insert(schema.meta).values(key="analyzer", value=ANALYZER_VERSION))

    def _detect_changes(
        self, scanned: list[ScannedFile], scope: list[str] | None, report: UpdateReport, stale: bool
    ) -> list[_Pending]:
        """The files to index: new and changed ones, and with a `stale` analyser every file."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.files.c.id, schema.files.c.path, schema.files.c.sha256,
                                       schema.files.c.size, schema.files.c.mtime_ns)).all()
        known = {row.path: row for row in rows if in_scope(row.path, scope)}
        pending: list[_Pending] = []
        for item in scanned:
            row = known.pop(item.path, None)
            if not stale and row is not None and row.size == item.size and row.mtime_ns == item.mtime_ns:
                report.unchanged += 1
                continue
            try:
                text, lossy, _ = load_text(self.root / item.path, item.path)
            except (OSError, BadDocument) as exc:
                if isinstance(exc, BadDocument):
                    report.bad_documents[item.path] = str(exc)
                else:
                    report.skipped.setdefault(UNREADABLE, []).append(item.path)
                if row is not None:
                    known[item.path] = row  # no longer readable: leaves the index like a deleted file
                continue
            if lossy:
                report.warn("invalid_utf8", item.path)
            sha = sha256_text(text)
            if row is not None and row.sha256 == sha and not stale:
                self._write(update(schema.files).where(schema.files.c.id == row.id)
                            .values(size=item.size, mtime_ns=item.mtime_ns))
                report.unchanged += 1
                continue
            bucket = report.added if row is None else report.reanalyzed if row.sha256 == sha else report.changed
            bucket.append(item.path)
            pending.append(_Pending(item, sha, row.id if row is not None else None))

        gone_by_sha: dict[str, list] = {}
        for row in sorted(known.values(), key=lambda r: r.path):
            gone_by_sha.setdefault(row.sha256, []).append(row)
        still_pending = []
        for item in pending:
            suffix = Path(item.scanned.path).suffix  # a rename that changes the language is a new file
            candidates = [r for r in gone_by_sha.get(item.sha, []) if Path(r.path).suffix == suffix]
            if item.file_id is None and candidates:
                old = candidates[0]
                gone_by_sha[item.sha].remove(old)
                del known[old.path]
                self._rename(old, item)
                report.added.remove(item.scanned.path)
                report.renamed.append((old.path, item.scanned.path))
            else:
                still_pending.append(item)
        for row in known.values():
            self._forget(row.id, row.path)
            report.deleted.append(row.path)
        return still_pending

    def _index_file(self, item: _Pending, report: UpdateReport) -> None:
        path = item.scanned.path
        try:
            text, converted = self._read(path, item.sha)
            analysis = analyze(text, converted.language if converted else detect_language(path, text))
        except Exception as exc:  # an unreadable file or a parser failure must not stop the other files
            report.errors[path] = f"not indexed: {exc}"
            for bucket in (report.added, report.changed, report.reanalyzed):
                if path in bucket:
                    bucket.remove(path)
            return
        self._store(item, analysis, text.count("\n") + 1, converted)
        report.chunks_written += len(analysis.chunks)

    def _read(self, path: str, sha: str) -> tuple[str, Converted | None]:
        """The file's text (and a document's conversion), provided it is still the text that was hashed."""
        try:
            text, _, converted = load_text(self.root / path, path)
        except OSError as exc:
            raise ChangedFile(f"cannot read it: {exc.strerror or exc}") from exc
        except BadDocument as exc:
            raise ChangedFile(f"it changed during the update and now yields no text: {exc}") from exc
        if sha256_text(text) != sha:
            raise ChangedFile("it changed during the update; run the update again")
        return text, converted

    @transient
    def _store(self, item: _Pending, analysis: FileAnalysis, lines: int, converted: Converted | None) -> None:
        values = dict(
            path=item.scanned.path, sha256=item.sha, size=item.scanned.size, mtime_ns=item.scanned.mtime_ns,
            language=analysis.language, lines=lines, indexed_at=time.time(), memory_sha256=None,
        )
        with self.engine.begin() as conn:
            if item.file_id is None:
                file_id = conn.execute(insert(schema.files).values(**values)).inserted_primary_key[0]
            else:
                file_id = item.file_id
                for table in schema.PER_FILE_TABLES:
                    conn.execute(delete(table).where(table.c.file_id == file_id))
                conn.execute(update(schema.files).where(schema.files.c.id == file_id).values(**values))
            _insert(conn, schema.chunks, [
                dict(file_id=file_id, ordinal=c.ordinal, parent=c.parent, kind=c.kind, name=c.name,
                     qualname=c.qualname, title=c.title, line_start=c.line_start, line_end=c.line_end,
                     byte_start=c.byte_start, byte_end=c.byte_end)
                for c in analysis.chunks
            ])
            _insert(conn, schema.symbols, [
                dict(file_id=file_id, chunk=s.chunk, name=s.name, qualname=s.qualname, kind=s.kind,
                     line_start=s.line_start, line_end=s.line_end)
                for s in analysis.symbols
            ])
            _insert(conn, schema.references, [
                dict(file_id=file_id, chunk=r.chunk, name=r.name, kind=r.kind, line=r.line)
                for r in analysis.references
            ])
            _insert(conn, schema.imports, [dict(file_id=file_id, target=i.target, line=i.line)
                                           for i in analysis.imports])
            _insert(conn, schema.places, [
                dict(file_id=file_id, line_start=p.line_start, line_end=p.line_end, page=p.page, heading=p.heading)
                for p in (converted.places if converted else [])
            ])
            _insert(conn, schema.xrefs, [
                dict(file_id=file_id, chunk=x.chunk, line=x.line, text=x.text, target=x.target, detail=x.detail,
                     external=x.external)
                for x in analysis.xrefs
            ])

    @transient
    def _rename(self, old, item: _Pending) -> None:
        """Same content under a new path: keep the analysis, and let memory re-learn it under the new name."""
        with self.engine.begin() as conn:
            for table in (schema.blocks, schema.chunk_blocks):
                conn.execute(delete(table).where(table.c.file_id == old.id))
            conn.execute(update(schema.files).where(schema.files.c.id == old.id).values(
                path=item.scanned.path, size=item.scanned.size, mtime_ns=item.scanned.mtime_ns, memory_sha256=None))
            _queue_retirement(conn, old.path)

    @transient
    def _forget(self, file_id: int, path: str) -> None:
        with self.engine.begin() as conn:
            for table in schema.PER_FILE_TABLES:
                conn.execute(delete(table).where(table.c.file_id == file_id))
            conn.execute(delete(schema.files).where(schema.files.c.id == file_id))
            _queue_retirement(conn, path)

    @transient
    def _write(self, statement) -> None:
        with self.engine.begin() as conn:
            conn.execute(statement)

    # -- memory --------------------------------------------------------------------------------------

    def _feed_memory(self, memory: MemorySink, scope: list[str] | None, report: UpdateReport,
                     bar: IngestProgress) -> None:
        live = memory.live_sources()
        with self.engine.connect() as conn:
            queued = conn.execute(select(schema.retired.c.source)).scalars().all()
            rows = conn.execute(select(schema.files.c.id, schema.files.c.path, schema.files.c.sha256,
                                       schema.files.c.size, schema.files.c.memory_sha256)).all()
        indexed = {row.path for row in rows}
        for source in queued:
            if source in live and source not in indexed:
                report.blocks_retired += memory.retire_document(source)
                report.retired.append(source)
            self._write(delete(schema.retired).where(schema.retired.c.source == source))

        with self.engine.connect() as conn:
            with_blocks = set(conn.execute(select(schema.blocks.c.file_id).distinct()).scalars())
        todo = {row.path: row for row in rows
                if in_scope(row.path, scope) and not in_memory(row, live, row.id in with_blocks)}
        if not todo:
            return
        order = [p for p in self._order() if p in todo] if len(todo) > 1 else list(todo)
        bar.phase("ingesting", sum(row.size // BYTES_PER_TOKEN for row in todo.values()), len(order), "~tok")
        tokens: dict[str, int] = {}

        def documents() -> Iterator[tuple[str, str]]:
            """Each file's text in dependency order, its older text retired just before it is handed over."""
            for path in order:
                row = todo[path]
                try:
                    text, _ = self._read(path, row.sha256)
                except ChangedFile as exc:
                    report.errors[path] = f"not ingested: {exc}"
                    bar.advance(row.size // BYTES_PER_TOKEN)
                    continue
                tokens[path] = estimate_tokens(text)
                try:
                    if path in live and live[path] != row.sha256:  # the same text is kept, with its block ids
                        report.blocks_retired += memory.retire_document(path)
                except Exception as exc:  # one document the engine rejects must not stop the others
                    report.errors[path] = f"memory ingest failed: {exc}"
                    bar.advance(tokens[path])
                    continue
                yield text, path

        for path, spans in ingest_each(memory, documents()):
            if isinstance(spans, Exception):
                report.errors[path] = f"memory ingest failed: {spans}"
            else:
                self._map_blocks(todo[path].id, todo[path].sha256, spans)
                if not spans:  # an empty file: memory holds it as no blocks, so it is no document to answer from
                    report.warn("no_text", path)
                # memory held this text already: its blocks were only mapped to the new analysis
                if not (path in report.reanalyzed and live.get(path) == todo[path].sha256):
                    report.ingested.append(path)
                    report.blocks_written += len(spans)
                    report.approx_tokens += tokens[path]
            bar.advance(tokens[path])

    def _order(self) -> list[str]:
        return dependency_order(build_graph(load_facts(self.engine)))

    @transient
    def _map_blocks(self, file_id: int, sha: str, spans: list[BlockSpan]) -> None:
        with self.engine.begin() as conn:
            ranges = conn.execute(select(schema.chunks.c.ordinal, schema.chunks.c.line_start, schema.chunks.c.line_end)
                                  .where(schema.chunks.c.file_id == file_id)).all()
            for table in (schema.blocks, schema.chunk_blocks):
                conn.execute(delete(table).where(table.c.file_id == file_id))
            _insert(conn, schema.blocks, [dict(file_id=file_id, block_id=s.block_id, line_start=s.line_start,
                                                 line_end=s.line_end) for s in spans])
            _insert(conn, schema.chunk_blocks, [dict(file_id=file_id, chunk=ordinal, block_id=block_id)
                                                  for ordinal, block_id in overlaps(ranges, spans)])
            conn.execute(update(schema.files).where(schema.files.c.id == file_id).values(memory_sha256=sha))


def ingest_each(memory: MemorySink, documents: Iterable[tuple[str, str]]
                ) -> Iterator[tuple[str, list[BlockSpan] | Exception]]:
    """`(source, blocks or the exception it failed with)` for each `(text, source)`, in order: through the
    sink's own `ingest_documents` when it writes several at once, else one document at a time."""
    if isinstance(memory, BatchMemorySink):
        yield from memory.ingest_documents(documents)
        return
    for text, source in documents:
        try:
            yield source, memory.ingest_document(text, source)
        except Exception as exc:  # one document the engine rejects must not stop the others
            yield source, exc


def in_memory(row, live: dict[str, str], has_blocks: bool) -> bool:
    """Whether memory holds this indexed file as indexed. A document the engine stored as no blocks
    (an empty file) has no live source, and is in memory all the same once its (empty) map is committed."""
    if row.memory_sha256 != row.sha256:
        return False
    return live.get(row.path) == row.sha256 if has_blocks or row.path in live else True


def overlaps(chunks: Iterable[tuple[int, int, int]], spans: list[BlockSpan]) -> list[tuple[int, int]]:
    """(chunk ordinal, block id) for every chunk (ordinal, line_start, line_end) and block whose lines overlap.

    Blocks come in document order, so their starts and ends both rise and a binary search finds each
    chunk's run of blocks (a linear scan stands in if the ends do not rise).
    """
    blocks = sorted(spans, key=lambda s: (s.line_start, s.line_end))
    starts = [b.line_start for b in blocks]
    ends = [b.line_end for b in blocks]
    monotone = all(a <= b for a, b in zip(ends, ends[1:], strict=False))
    found = []
    for ordinal, first, last in chunks:
        low = bisect_left(ends, first) if monotone else 0
        high = bisect_right(starts, last)
        found.extend((ordinal, b.block_id) for b in blocks[low:high] if b.line_end >= first)
    return found


def _insert(conn, table, rows: list[dict]) -> None:
    if rows:
        conn.execute(insert(table), rows)


def _queue_retirement(conn, source: str) -> None:
    """Remember that memory may hold blocks of `source`, which the index no longer has under that name."""
    conn.execute(delete(schema.retired).where(schema.retired.c.source == source))
    conn.execute(insert(schema.retired).values(source=source))
