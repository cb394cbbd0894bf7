"""What the tools need from a symbol index, as a Protocol, and the records it returns.

The corpus index (`repos_index`) and the tree-sitter fallback (`tools.pyindex.PythonIndex`) both fit.
Positions: 1-based lines, 0-based columns counted in characters (not bytes), ends exclusive; paths
are POSIX paths relative to the repository root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Span:
    """A range of text in one file."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column + 1}"


@dataclass(frozen=True)
class Symbol:
    """A definition: `span` covers its name, `extent` the whole definition (decorators included)."""

    name: str
    kind: str  # "function", "method", "class" or "variable"
    span: Span
    extent: Span
    parent: str | None = None  # the enclosing class or function, None at module level


@dataclass(frozen=True)
class Reference:
    """A use of a name; `context` is "call", "import", "attribute" or "name"."""

    name: str
    span: Span
    context: str


class SymbolIndex(Protocol):
    """Where names are defined and used."""

    def find_symbol(self, name: str) -> list[Symbol]:
        """Every definition of `name`."""
        ...

    def find_references(self, name: str) -> list[Reference]:
        """Every use of `name` other than its definitions' names."""
        ...

    def outline(self, path: str) -> list[Symbol]:
        """The definitions in one file, in order."""
        ...


class TextSource(Protocol):
    """Files to index: a `Workspace` (the disk) or an `EditSet` (the disk with staged edits)."""

    def read_text(self, path: str) -> str: ...

    def list_files(self) -> list[str]: ...
