"""The contract between the corpus index and the memory engine that stores documents as blocks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable


class BlockSpan(Protocol):
    """A memory block and the lines (1-based, inclusive) of the document it holds; `l2m_core.BlockSpan` fits."""

    @property
    def block_id(self) -> int: ...

    @property
    def line_start(self) -> int: ...

    @property
    def line_end(self) -> int: ...


@runtime_checkable
class MemorySink(Protocol):
    """Where ingested documents go. `source` is the file's path relative to the corpus root (posix)."""

    def ingest_document(self, text: str, source: str) -> list[BlockSpan]:
        """Write one whole document into memory and return the blocks written, with their line spans.
        When memory already holds exactly this text for `source`, return those blocks without writing."""
        ...

    def retire_document(self, source: str) -> int:
        """Retire every live block of `source`; return how many were retired."""
        ...

    def live_sources(self) -> dict[str, str]:
        """source -> sha256 (hex) of the text ingested for it, for every source with live blocks."""
        ...


@runtime_checkable
class BatchMemorySink(MemorySink, Protocol):
    """A sink that writes several documents at once (a cluster of workers)."""

    def ingest_documents(self, documents: Iterable[tuple[str, str]]
                         ) -> Iterator[tuple[str, list[BlockSpan] | Exception]]:
        """Write each `(text, source)` as `ingest_document` would, pulling documents as workers come free, and
        yield `(source, blocks)` (or the exception the document failed with) in the order they were pulled,
        each once that document and all before it are stored: memory holds them in that order."""
        ...
