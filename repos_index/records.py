"""What analysing one file yields: chunks, symbols, references, imports and legal cross-references.

Lines are 1-based and inclusive; bytes are offsets into the UTF-8 encoding of the analysed text,
end exclusive. `chunk` fields hold the ordinal of the innermost chunk enclosing the item.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Chunk:
    """A unit of a file at definition or section granularity, nested through `parent` (an ordinal)."""

    ordinal: int
    kind: str  # module, class, function, method, ... | article, paragraph, point, ... | heading | paragraph | lines
    name: str | None  # identifier, legal label ("Article 33"), heading text
    qualname: str | None  # enclosing context: "Shape.area", "Chapter II / Section I / Article 5"
    title: str | None  # code signature line, legal heading title
    line_start: int
    line_end: int
    byte_start: int
    byte_end: int
    parent: int | None = None


@dataclass(frozen=True, slots=True)
class Symbol:
    """A definition: code (class, function, ...), a top-level variable, or a legal defined term."""

    name: str
    qualname: str
    kind: str
    line_start: int
    line_end: int
    chunk: int | None


@dataclass(frozen=True, slots=True)
class Reference:
    """A use of a name: a call, a type, a base class, an imported name."""

    name: str
    kind: str
    line: int
    chunk: int | None


@dataclass(frozen=True, slots=True)
class Import:
    """An import as written (module, path or include); resolved to files by `graph`."""

    target: str
    line: int


@dataclass(frozen=True, slots=True)
class CrossRef:
    """A legal cross-reference such as "Article 33(1)": `target` is the unit, `detail` the paragraph."""

    text: str
    target: str
    detail: str | None
    external: str | None  # the other act it points into ("Directive (EU) 2022/2555"), None when internal
    line: int
    chunk: int | None


@dataclass(slots=True)
class FileAnalysis:
    language: str
    chunks: list[Chunk] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)
    imports: list[Import] = field(default_factory=list)
    xrefs: list[CrossRef] = field(default_factory=list)


class LineTable:
    """Byte offsets of line starts in a text, and the innermost chunk covering each line."""

    def __init__(self, text: str) -> None:
        self.starts = [0]
        offset = 0
        for line in text.split("\n"):
            offset += len(line.encode("utf-8")) + 1
            self.starts.append(offset)
        self.total_bytes = offset - 1
        self.line_count = len(self.starts) - 1

    def byte_start(self, line: int) -> int:
        return self.starts[line - 1]

    def byte_end(self, line: int) -> int:
        """End (exclusive) of `line`, without its newline."""
        return self.starts[line] - 1

    @staticmethod
    def innermost(chunks: list[Chunk], line_count: int) -> list[int | None]:
        """Index `line` -> ordinal of the innermost chunk covering it (chunks in document order, parents first)."""
        owner: list[int | None] = [None] * (line_count + 2)
        for chunk in chunks:
            for line in range(chunk.line_start, min(chunk.line_end, line_count) + 1):
                owner[line] = chunk.ordinal
        return owner


def ordered(chunks: list[Chunk]) -> tuple[list[Chunk], dict[int, int]]:
    """Put chunks in document order (enclosing before enclosed), renumbering ordinals and parents.

    Returns the chunks and the map from each old ordinal to its new one.
    """
    chunks = sorted(chunks, key=lambda c: (c.line_start, -c.line_end, c.byte_start, -c.byte_end))
    renumber = {c.ordinal: i for i, c in enumerate(chunks)}
    return [
        Chunk(
            i, c.kind, c.name, c.qualname, c.title, c.line_start, c.line_end, c.byte_start, c.byte_end,
            renumber.get(c.parent) if c.parent is not None else None,
        )
        for i, c in enumerate(chunks)
    ], renumber
