"""The corpus index: incremental update into memory, and the name lookups the agent uses."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, Row, and_, func, or_, select

from l2m_core.errors import L2MError
from l2m_core.memory import Enclosing
from repos_index import schema
from repos_index.code import CODE_LANGUAGES
from repos_index.graph import build_graph, dependency_order, load_facts
from repos_index.memory import MemorySink
from repos_index.pipeline import Updater, UpdateReport, in_memory
from repos_index.scan import DEFAULT_MAX_BYTES

SECTION_KINDS = (
    "preamble", "recital", "part", "title", "chapter", "subchapter", "section", "subsection", "article",
    "annex", "appendix", "schedule", "exhibit", "paragraph", "point", "heading",
)
# What a citation names: the innermost definition of code, the innermost of these legal units (not a
# paragraph or point: "Article 33" is what a reader looks up), or a prose heading.
_NAMED_KINDS = frozenset({"class", "function", "method", "heading", "article", "annex", "recital", "section",
                          "subsection", "schedule", "appendix", "exhibit"})
_MEMBER_HOLDERS = frozenset({"class", "section", "subsection"})  # named chunks whose own lines are mostly members
_LEGAL_WORDS = {
    "art": "Article", "article": "Article", "articles": "Article", "§": "§", "sec": "Section", "section": "Section",
    "chapter": "Chapter", "title": "Title", "part": "Part", "annex": "Annex", "recital": "Recital",
}
_LABEL = re.compile(r"^(?P<word>art(?:icles?)?|sec(?:tion)?|chapter|title|part|annex|recital|§)\.?\s*(?P<rest>.+)$",
                    re.IGNORECASE)


@dataclass(frozen=True)
class SymbolHit:
    path: str
    name: str
    qualname: str
    kind: str
    line_start: int
    line_end: int
    blocks: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ReferenceHit:
    path: str
    name: str
    kind: str
    line: int
    context: str | None  # the enclosing chunk's qualified name


@dataclass(frozen=True)
class OutlineEntry:
    kind: str
    name: str | None
    qualname: str | None
    title: str | None
    line_start: int
    line_end: int
    depth: int


@dataclass(frozen=True)
class Section:
    path: str
    label: str
    title: str | None
    kind: str
    qualname: str | None
    line_start: int
    line_end: int
    byte_start: int
    byte_end: int
    blocks: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class CrossRefHit:
    path: str
    line: int
    text: str  # as written: "paragraph 2 of Article 6"
    source: str | None  # the label of the unit that holds the reference
    target: str  # "Article 6"
    detail: str | None  # "2"
    external: str | None  # the other act, when it points outside this document
    resolved: Section | None  # the unit it points to in this document


class CorpusIndex:
    """The index of one corpus root, in a database given as a URL, a SQLite path, or an `Engine`
    (pass the memory store's engine to keep both in one file; the index's tables start with `idx_`).
    """

    def __init__(
        self,
        db: str | Path | Engine,
        root: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        extra_ignores: Iterable[str] = (),
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise L2MError(f"not a directory: {root}")
        self.root = self.root.resolve()
        self.engine = schema.open_engine(db)
        self._updater = Updater(self.engine, self.root, max_bytes=max_bytes, extra_ignores=tuple(extra_ignores))

    # -- updating ------------------------------------------------------------------------------------

    def update(
        self,
        memory: MemorySink | None = None,
        *,
        paths: Iterable[str | os.PathLike[str]] | None = None,
        progress: bool = True,
    ) -> UpdateReport:
        """Bring the index (and `memory`, when given) up to date with the files under the root.

        Only new, changed, renamed and deleted files cost work; an unchanged tree reads no file and
        calls nothing on memory but `live_sources()`. `paths` limits the update to some files or
        folders (absolute, or relative to the root). Problems with single files (unreadable, binary,
        too large, invalid UTF-8, a symlink loop, a path that does not exist) are reported, never raised.
        """
        return self._updater.run(memory, None if paths is None else [str(p) for p in paths], progress)

    # -- lookups -------------------------------------------------------------------------------------

    def find_symbol(self, name: str) -> list[SymbolHit]:
        """Definitions named `name` or qualified as `name` ("Square.area"), defined terms included;
        an exact match first, else a case-insensitive one."""
        s = schema.symbols
        rows = self._symbols(or_(s.c.name == name, s.c.qualname == name))
        lowered = name.lower()
        return rows or self._symbols(or_(func.lower(s.c.name) == lowered, func.lower(s.c.qualname) == lowered))

    def find_terms(self, holding: str) -> list[SymbolHit]:
        """Defined terms whose name holds `holding` as whole words, any case ('significant' ->
        'significant cybersecurity risk')."""
        s = schema.symbols
        whole = re.compile(rf"(?<!\w){re.escape(holding)}(?!\w)", re.IGNORECASE)
        hits = self._symbols(and_(s.c.kind == "term", func.lower(s.c.name).contains(holding.lower(), autoescape=True)))
        return [hit for hit in hits if whole.search(hit.name)]

    def _symbols(self, where) -> list[SymbolHit]:
        s, f = schema.symbols, schema.files
        query = (select(f.c.path, s.c.file_id, s.c.chunk, s.c.name, s.c.qualname, s.c.kind, s.c.line_start,
                        s.c.line_end).join(f, f.c.id == s.c.file_id).where(where).order_by(f.c.path, s.c.line_start))
        with self.engine.connect() as conn:
            return [SymbolHit(r.path, r.name, r.qualname, r.kind, r.line_start, r.line_end,
                              self._chunk_blocks(conn, r.file_id, r.chunk)) for r in conn.execute(query)]

    def find_references(self, name: str) -> list[ReferenceHit]:
        """Uses of a name (calls, types, base classes, imports); "Square.area" looks up "area"."""
        bare = name.rsplit(".", 1)[-1].rsplit("::", 1)[-1]
        r, f, c = schema.references, schema.files, schema.chunks
        query = (
            select(f.c.path, r.c.name, r.c.kind, r.c.line, c.c.qualname, c.c.name.label("chunk_name"))
            .join(f, f.c.id == r.c.file_id)
            .outerjoin(c, and_(c.c.file_id == r.c.file_id, c.c.ordinal == r.c.chunk))
            .where(r.c.name == bare)
            .order_by(f.c.path, r.c.line)
        )
        with self.engine.connect() as conn:
            return [ReferenceHit(row.path, row.name, row.kind, row.line, row.qualname or row.chunk_name)
                    for row in conn.execute(query)]

    def outline(self, path: str | os.PathLike[str]) -> list[OutlineEntry]:
        """A file's chunks in document order with their nesting depth."""
        with self.engine.connect() as conn:
            file_id = self._file_id(conn, path)
            rows = conn.execute(select(schema.chunks).where(schema.chunks.c.file_id == file_id)
                                .order_by(schema.chunks.c.ordinal)).all()
        depth: dict[int, int] = {}
        entries = []
        for row in rows:
            depth[row.ordinal] = depth.get(row.parent, -1) + 1 if row.parent is not None else 0
            entries.append(OutlineEntry(row.kind, row.name, row.qualname, row.title, row.line_start, row.line_end,
                                        depth[row.ordinal]))
        return entries

    def find_section(self, number_or_title: str) -> list[Section]:
        """Legal units and Markdown headings by label ("Article 33", "art. 33(1)", "§ 5", "33") or by
        title ("Register of information"): exact title first, then titles containing the text."""
        query = number_or_title.strip()
        if not query:
            raise L2MError("an empty section name")
        c = schema.chunks
        with self.engine.connect() as conn:
            for condition in (
                c.c.name.in_(_labels(query)),
                or_(func.lower(c.c.title) == query.lower(), func.lower(c.c.name) == query.lower()),
                or_(c.c.title.ilike(f"%{query}%"), and_(c.c.kind == "heading", c.c.name.ilike(f"%{query}%"))),
            ):
                found = self._sections(conn, and_(condition, c.c.kind.in_(SECTION_KINDS), c.c.name.is_not(None)))
                if found:
                    return found
        return []

    def cross_references(self, section: str | Section, incoming: bool = False) -> list[CrossRefHit]:
        """The references made inside a section (or, with `incoming`, those pointing at it from the
        same document), each resolved to the unit it names when that unit is in the document."""
        targets = [section] if isinstance(section, Section) else self.find_section(section)
        x, c = schema.xrefs, schema.chunks
        hits: list[CrossRefHit] = []
        with self.engine.connect() as conn:
            for target in targets:
                file_id = self._file_id(conn, target.path)
                query = select(x, c.c.name.label("source")).outerjoin(
                    c, and_(c.c.file_id == x.c.file_id, c.c.ordinal == x.c.chunk)).where(x.c.file_id == file_id)
                if incoming:
                    unit, _, detail = target.label.partition("(")
                    query = query.where(x.c.target == unit, x.c.external.is_(None))
                    if detail:
                        query = query.where(x.c.detail == detail.split(")")[0])
                else:
                    query = query.where(x.c.line.between(target.line_start, target.line_end))
                for row in conn.execute(query.order_by(x.c.line, x.c.id)):
                    resolved = None
                    if row.external is None:
                        labels = ([f"{row.target}({row.detail})"] if row.detail else []) + [row.target]
                        for label in labels:
                            found = self._sections(conn, and_(c.c.file_id == file_id, c.c.name == label))
                            if found:
                                resolved = found[0]
                                break
                    hits.append(CrossRefHit(target.path, row.line, row.text, row.source, row.target, row.detail,
                                            row.external, resolved))
        return hits

    def blocks_for(self, path: str | os.PathLike[str], line_start: int | None = None,
                   line_end: int | None = None) -> list[int]:
        """The memory blocks holding a file, or the lines `line_start`..`line_end` of it."""
        b = schema.blocks
        with self.engine.connect() as conn:
            file_id = self._file_id(conn, path)
            query = select(b.c.block_id).where(b.c.file_id == file_id)
            if line_end is not None:
                query = query.where(b.c.line_start <= line_end)
            if line_start is not None:
                query = query.where(b.c.line_end >= line_start)
            return list(conn.execute(query.order_by(b.c.line_start, b.c.block_id)).scalars())

    def referrers(self, block_ids: Iterable[int]) -> list[list[int]]:
        """The paragraphs (as their blocks, in document order) of the same documents that refer to a legal unit
        the given blocks lie in, whole or in part: for a block of Article 14, Article 64(2), "... the obligations
        set out in Articles 13 and 14 shall be subject to administrative fines of up to EUR 15 000 000 ...".
        A reference outside any paragraph stands for the blocks holding its line; blocks given are left out."""
        b, c, x = schema.blocks, schema.chunks, schema.xrefs
        wanted = set(block_ids)
        out: list[list[int]] = []
        with self.engine.connect() as conn:
            rows = conn.execute(select(b).where(b.c.block_id.in_(wanted))).all() if wanted else []
            for file_id in sorted({r.file_id for r in rows}):
                overlapping = or_(*(and_(c.c.line_start <= r.line_end, c.c.line_end >= r.line_start)
                                    for r in rows if r.file_id == file_id))
                units = set(conn.scalars(select(c.c.name).where(c.c.file_id == file_id, c.c.name.is_not(None),
                                                                 c.c.kind.in_(SECTION_KINDS), overlapping)))
                lines = sorted(set(conn.scalars(select(x.c.line).where(
                    x.c.file_id == file_id, x.c.target.in_(units), x.c.external.is_(None)))))
                paragraphs = conn.execute(select(c.c.line_start, c.c.line_end).where(
                    c.c.file_id == file_id, c.c.kind == "paragraph")).all()
                spans = _block_spans(conn, file_id)
                for first, last in dict.fromkeys(next(((p.line_start, p.line_end) for p in paragraphs
                                                       if p.line_start <= n <= p.line_end), (n, n)) for n in lines):
                    held = [s.block_id for s in spans if s.line_start <= last and s.line_end >= first]
                    if held and wanted.isdisjoint(held):
                        out.append(held)
        return out

    def enclosing(self, block_ids: Iterable[int]) -> dict[int, Enclosing]:
        """For each memory block, the definition or section it lies in (the innermost named chunk holding the
        block's middle line, else the one holding most of its lines: a block whose middle falls between two
        definitions, the end of one and the start of the next): its name and the block holding its first line,
        where the heading is; in a converted document, the page (PDF) or heading path (HTML, DOCX) of that
        middle line; whether it is source code (every block of a parsed code file has an entry, named or not);
        whether it lies in a recital."""
        b, c, p = schema.blocks, schema.chunks, schema.places
        wanted = set(block_ids)
        out: dict[int, Enclosing] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(b).where(b.c.block_id.in_(wanted))).all() if wanted else []
            file_ids = {r.file_id for r in rows}
            code = set(conn.scalars(select(schema.files.c.id).where(
                schema.files.c.id.in_(file_ids), schema.files.c.language.in_(CODE_LANGUAGES))))
            for file_id in file_ids:
                spans = _block_spans(conn, file_id)
                named = conn.execute(select(c.c.kind, c.c.name, c.c.qualname, c.c.line_start, c.c.line_end)
                                     .where(c.c.file_id == file_id, c.c.kind.in_(_NAMED_KINDS))).all()
                places = conn.execute(select(p).where(p.c.file_id == file_id)).all()
                for row in (r for r in rows if r.file_id == file_id):
                    middle = (row.line_start + row.line_end) // 2
                    place = next((pl for pl in places if pl.line_start <= middle <= pl.line_end), None)
                    page, path = (place.page, place.heading) if place is not None else (None, None)
                    chunk = _labelling_chunk(named, row.line_start, row.line_end)
                    if chunk is None:
                        if place is not None or file_id in code:
                            out[row.block_id] = Enclosing("", None, page, path, file_id in code)
                        continue
                    heading = next((s.block_id for s in spans if s.line_start <= chunk.line_start <= s.line_end),
                                   None)
                    label = chunk.qualname if chunk.kind in ("class", "function", "method") else chunk.name
                    out[row.block_id] = Enclosing(label or chunk.name or "", heading, page, path, file_id in code,
                                                  chunk.kind == "recital")
        return out

    def file_graph(self) -> dict[str, set[str]]:
        """path -> the indexed paths it depends on (imports and names used from elsewhere)."""
        return build_graph(load_facts(self.engine))

    def ingest_order(self) -> list[str]:
        """Every indexed path, definitions before their uses (see `graph.dependency_order`)."""
        return dependency_order(self.file_graph())

    def memory_disagreements(self, memory: MemorySink) -> dict[str, str]:
        """Where index and memory disagree: path -> "not in memory" | "stale in memory" | "no block map" |
        "not in index" (the last also lists any non-file sources memory holds). Empty when they agree."""
        live = memory.live_sources()
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.files.c.id, schema.files.c.path, schema.files.c.sha256,
                                       schema.files.c.memory_sha256)).all()
            with_blocks = set(conn.execute(select(schema.blocks.c.file_id).distinct()).scalars())
        problems: dict[str, str] = {}
        for row in rows:
            if in_memory(row, live, row.id in with_blocks):
                continue
            if row.path in live and live[row.path] != row.sha256:
                problems[row.path] = "stale in memory"
            elif row.path in live:
                problems[row.path] = "no block map"
            else:
                problems[row.path] = "not in memory"
        indexed = {row.path for row in rows}
        problems.update({source: "not in index" for source in live if source not in indexed})
        return problems

    def stats(self) -> dict[str, int]:
        """Row counts: files, chunks, symbols, references, imports, cross-references, blocks."""
        tables = {"files": schema.files, "chunks": schema.chunks, "symbols": schema.symbols,
                  "references": schema.references, "imports": schema.imports, "xrefs": schema.xrefs,
                  "blocks": schema.blocks}
        with self.engine.connect() as conn:
            return {name: conn.execute(select(func.count()).select_from(t)).scalar_one() for name, t in tables.items()}

    # -- helpers -------------------------------------------------------------------------------------

    def relative(self, path: str | os.PathLike[str]) -> str:
        """A path as the index stores it (posix, relative to the root); L2MError when outside the root."""
        candidate = Path(path)
        absolute = Path(os.path.abspath(candidate if candidate.is_absolute() else self.root / candidate))
        try:
            return absolute.relative_to(self.root).as_posix()
        except ValueError:
            raise L2MError(f"outside the corpus root {self.root}: {path}") from None

    def _file_id(self, conn, path: str | os.PathLike[str]) -> int:
        relative = self.relative(path)
        file_id = conn.execute(select(schema.files.c.id).where(schema.files.c.path == relative)).scalar()
        if file_id is None:
            raise L2MError(f"not indexed: {relative}")
        return file_id

    @staticmethod
    def _chunk_blocks(conn, file_id: int, chunk: int | None) -> list[int]:
        if chunk is None:
            return []
        cb = schema.chunk_blocks
        return list(conn.execute(select(cb.c.block_id).where(cb.c.file_id == file_id, cb.c.chunk == chunk)
                                 .order_by(cb.c.block_id)).scalars())

    def _sections(self, conn, condition) -> list[Section]:
        c, f = schema.chunks, schema.files
        rows = conn.execute(select(c, f.c.path).join(f, f.c.id == c.c.file_id).where(condition)
                            .order_by(f.c.path, c.c.ordinal)).all()
        return [Section(r.path, r.name, r.title, r.kind, r.qualname, r.line_start, r.line_end, r.byte_start,
                        r.byte_end, self._chunk_blocks(conn, r.file_id, r.ordinal)) for r in rows]


def _labelling_chunk(named: Sequence[Row], start: int, end: int) -> Row | None:
    """The named chunk a block of lines `start`..`end` is labelled by: the innermost one holding its middle
    line; where that middle line falls between definitions (a blank line ending one function and starting the
    next; between two methods, where their class holds it; a Section's heading between two Articles), the one
    of those holding most of the block's lines, if together they hold most of them (a class's docstring block
    stays the class's when a method starts on its last line). A function's own lines are its own: a nested
    definition overlapping its block does not take the label."""
    middle = (start + end) // 2
    holding = [ch for ch in named if ch.line_start <= middle <= ch.line_end]
    inner = min(holding, key=lambda ch: ch.line_end - ch.line_start, default=None)
    if inner is None:
        return _most_overlapping(named, start, end)
    if inner.kind not in _MEMBER_HOLDERS:
        return inner
    members = [ch for ch in named if ch is not inner and inner.line_start <= ch.line_start
               and ch.line_end <= inner.line_end]
    covered = {n for ch in members for n in range(max(start, ch.line_start), min(end, ch.line_end) + 1)}
    return _most_overlapping(members, start, end) if 2 * len(covered) > end - start + 1 else inner


def _most_overlapping(chunks: Sequence[Row], start: int, end: int) -> Row | None:
    """The chunk of `chunks` sharing the most lines with lines `start`..`end`, the earlier on a tie (None
    when none shares a line)."""
    def shared(ch: Row) -> int:
        return min(end, ch.line_end) - max(start, ch.line_start) + 1
    best = max(sorted(chunks, key=lambda ch: ch.line_start), key=shared, default=None)
    return best if best is not None and shared(best) > 0 else None


def _block_spans(conn, file_id: int) -> list:
    """(block_id, line_start, line_end) of every memory block of a file, in line order: what `enclosing` and
    `referrers` match line ranges against, fetched once per file rather than once per range."""
    b = schema.blocks
    return conn.execute(select(b.c.block_id, b.c.line_start, b.c.line_end).where(b.c.file_id == file_id)
                        .order_by(b.c.line_start, b.c.block_id)).all()


def _labels(query: str) -> list[str]:
    """Labels a query may mean: "art. 33(1)" -> "Article 33(1)"; "33" -> "Article 33", "§ 33", "Section 33"."""
    compact = re.sub(r"\s+", " ", query)
    m = _LABEL.match(compact)
    if m:
        word = _LEGAL_WORDS[m["word"].lower().rstrip(".")]
        return [f"{word} {m['rest'].strip()}", compact]
    if re.match(r"^\d", compact):
        return [f"Article {compact}", f"§ {compact}", f"Section {compact}", compact]
    return [compact]


def ingest(
    paths: Iterable[str | os.PathLike[str]],
    db: str | Path | Engine,
    *,
    root: str | os.PathLike[str] = ".",
    memory: MemorySink | None = None,
    progress: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    extra_ignores: Iterable[str] = (),
) -> UpdateReport:
    """Index `paths` (files or folders under `root`) and feed memory what changed: `CorpusIndex.update`."""
    index = CorpusIndex(db, root, max_bytes=max_bytes, extra_ignores=extra_ignores)
    return index.update(memory, paths=paths, progress=progress)
