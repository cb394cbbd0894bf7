"""Viewing files with line numbers and listing folders, the way a model reads a repository."""

from __future__ import annotations

from pathlib import Path

from l2m_core.errors import L2MError
from tools.symbols import TextSource
from tools.workspace import Workspace

MAX_OUTPUT = 16_000
CLIPPED = "\n<output clipped at {limit} characters: view a narrower line range or search for what you need>"


def clip(text: str, limit: int = MAX_OUTPUT) -> str:
    """`text`, cut at `limit` characters with a note saying so."""
    return text if len(text) <= limit else text[:limit] + CLIPPED.format(limit=limit)


def number_lines(text: str, start: int = 1, end: int | None = None, name: str = "file") -> str:
    """Lines `start`..`end` (1-based, inclusive; `end` None: to the last line), each prefixed by its number."""
    lines = text.splitlines()
    last = len(lines) if end is None else end
    if not lines and start == 1 and end is None:
        return ""
    if not 1 <= start <= max(len(lines), 1) or not start <= last <= len(lines):
        raise L2MError(f"line range {start}-{last} is outside {name}, which has lines 1-{len(lines)}")
    return "\n".join(f"{n:6d}\t{lines[n - 1]}" for n in range(start, last + 1))


def view_file(ws: Workspace, path: str, start: int = 1, end: int | None = None,
              source: TextSource | None = None) -> str:
    """A file's lines `start`..`end` with line numbers (from `source`, e.g. staged edits, when given),
    or, for a folder, its files two levels deep. Output is clipped at 16,000 characters."""
    target = ws.resolve(path)
    if target.is_dir():
        return clip(list_folder(ws, path))
    rel = ws.relative(target)
    text = (source or ws).read_text(rel)
    return clip(number_lines(text, start, end, rel))


def list_folder(ws: Workspace, path: str = ".", depth: int = 2) -> str:
    """The files under a folder (relative to the root), at most `depth` levels down, one per line."""
    folder = ws.relative(path)
    prefix = "" if folder == "." else folder + "/"
    shown = set()
    for rel in ws.list_files():
        if rel.startswith(prefix):
            parts = Path(rel[len(prefix):]).parts
            shown.add(prefix + "/".join(parts[:depth]) + ("/" if len(parts) > depth else ""))
    return "\n".join(sorted(shown)) if shown else f"{folder} has no files"
