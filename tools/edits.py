"""Staged edits: computed in memory, shown as one unified diff, written only by `apply()`, undoable.

Every edit is validated when staged (an exact, unique match; a line that exists; a file that does not
exist yet) and every file is checked again when applied: if it changed on disk since it was read,
nothing at all is written. Applying records the previous contents in the undo journal first.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from l2m_core.errors import L2MError
from l2m_core.store import STORE_DIR
from tools.journal import FileChange, UndoJournal
from tools.workspace import Workspace, write_atomic


@dataclass
class _Staged:
    base: bytes | None  # the file's bytes when first staged; None: a new file
    text: str


class EditSet:
    """Edits staged against a workspace; also a text source showing the staged state to indexes and views."""

    def __init__(self, ws: Workspace, journal: UndoJournal | None = None):
        self.ws = ws
        self.journal = journal if journal is not None else UndoJournal(ws.root / STORE_DIR / "undo")
        self._files: dict[str, _Staged] = {}
        self._history: list[tuple[str, str | None]] = []  # (file, its staged text before the step, None: unstaged)

    # -- reading the staged state ----------------------------------------------------------------

    def read_text(self, path: str | Path) -> str:
        """The file's text with the staged edits, or as on disk when it has none."""
        rel = self.ws.relative(path)
        staged = self._files.get(rel)
        return staged.text if staged is not None else self.ws.read_text(rel)

    def list_files(self) -> list[str]:
        """The workspace's files plus the staged new ones."""
        return sorted(set(self.ws.list_files()) | set(self._files))

    def exists(self, path: str | Path) -> bool:
        """Whether the file is on disk or staged as new."""
        return self.ws.relative(path) in self._files or self.ws.resolve(path).is_file()

    def staged_files(self) -> list[str]:
        """Files whose staged text differs from the disk, sorted."""
        return sorted(rel for rel, s in self._files.items() if s.base != s.text.encode())

    def __bool__(self) -> bool:
        return bool(self.staged_files())

    @property
    def step_count(self) -> int:
        """How many staged steps `undo()` can take back."""
        return len(self._history)

    # -- staging -----------------------------------------------------------------------------------

    def str_replace(self, path: str | Path, old: str, new: str) -> int:
        """Replace the single occurrence of `old` in the file by `new`; returns the line where it starts.

        Raises `L2MError` when `old` is empty, absent, or occurs more than once (listing those lines).
        """
        rel, text = self._current(path)
        if not old:
            raise L2MError("old_str is empty; give the exact text to replace")
        starts = list(_occurrences(text, old))
        if not starts:
            raise L2MError(f"old_str was not found in {rel}; nothing changed")
        if len(starts) > 1:
            lines = ", ".join(str(_line_of(text, s)) for s in starts)
            raise L2MError(f"old_str occurs {len(starts)} times in {rel} (lines {lines}); make it unique")
        start = starts[0]
        self._stage(rel, text[:start] + new + text[start + len(old):])
        return _line_of(text, start)

    def insert(self, path: str | Path, line: int, new_text: str) -> None:
        """Insert `new_text` as whole lines after line `line` (0: before the first line)."""
        rel, text = self._current(path)
        lines = text.splitlines(keepends=True)
        if not 0 <= line <= len(lines):
            raise L2MError(f"line {line} is outside {rel}, which has {len(lines)} lines (use 0 to {len(lines)})")
        newline = "\r\n" if "\r\n" in text else "\n"
        if new_text and not new_text.endswith(("\n", "\r")):
            new_text += newline
        if line == len(lines) and lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += newline
        self._stage(rel, "".join(lines[:line]) + new_text + "".join(lines[line:]))

    def create(self, path: str | Path, text: str) -> None:
        """Stage a new file; refuses a path that exists on disk or is already staged."""
        target = self.ws.resolve_writable(path)
        rel = self.ws.relative(target)
        if target.exists() or rel in self._files:
            raise L2MError(f"{rel} already exists; edit it with str_replace or insert instead")
        self._history.append((rel, None))
        self._files[rel] = _Staged(base=None, text=text)

    def replace_spans(self, path: str | Path, spans: Sequence[tuple[int, int, str]]) -> None:
        """Replace character ranges `[start, end)` of the staged text, all in one step; ranges may not overlap."""
        rel, text = self._current(path)
        ordered = sorted(spans)
        for (_, end, _), (start, _, _) in zip(ordered, ordered[1:], strict=False):
            if start < end:
                raise L2MError(f"overlapping edits in {rel}")
        for start, end, new in reversed(ordered):
            text = text[:start] + new + text[end:]
        self._stage(rel, text)

    def rewrite(self, path: str | Path, text: str) -> None:
        """Replace the whole text of an existing file (what structured refactorings compute)."""
        self._current(path)
        self._stage(self.ws.relative(path), text)

    def undo(self, path: str | Path | None = None) -> str:
        """Drop the last staged edit (of `path`, when given); returns the file it touched."""
        rel = None if path is None else self.ws.relative(path)
        for i in range(len(self._history) - 1, -1, -1):
            name, before = self._history[i]
            if rel is None or name == rel:
                del self._history[i]
                if before is None:
                    del self._files[name]
                else:
                    self._files[name].text = before
                return name
        raise L2MError("no staged edit to undo" if rel is None else f"no staged edit of {rel} to undo")

    # -- showing and applying ----------------------------------------------------------------------

    def diff(self) -> str:
        """All staged changes as one unified diff (`a/`, `b/` prefixes; `/dev/null` for new files)."""
        parts = []
        for rel in self.staged_files():
            staged = self._files[rel]
            before = "" if staged.base is None else staged.base.decode("utf-8")
            lines = difflib.unified_diff(
                before.splitlines(keepends=True),
                staged.text.splitlines(keepends=True),
                fromfile="/dev/null" if staged.base is None else f"a/{rel}",
                tofile=f"b/{rel}",
            )
            parts.extend(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
        return "".join(parts)

    def apply(self) -> str:
        """Write every staged file at once and clear the set; returns the undo journal entry id.

        Raises `L2MError`, writing nothing, when there is nothing to apply or any file changed on disk
        since it was read (or a new file appeared meanwhile).
        """
        staged = [(rel, self._files[rel]) for rel in self.staged_files()]
        changes = [FileChange(rel, s.base, s.text.encode()) for rel, s in staged]
        if not changes:
            raise L2MError("no staged edits to apply")
        for change in changes:
            target = self.ws.resolve_writable(change.path)
            now = target.read_bytes() if target.is_file() else None
            if now != change.before:
                what = "was created" if change.before is None else "changed"
                raise L2MError(f"{change.path} {what} on disk since it was read; nothing was written")
        new_dirs = self._missing_dirs(c.path for c in changes if c.before is None)
        entry = self.journal.record(changes, new_dirs)
        try:
            self._write(changes, new_dirs)
        except OSError as exc:
            self._write([FileChange(c.path, c.after, c.before) for c in changes], ())
            self.journal.discard(entry)
            raise L2MError(f"could not apply the edits ({exc}); nothing was changed") from None
        self._files.clear()
        self._history.clear()
        return entry

    # -- internals ---------------------------------------------------------------------------------

    def _current(self, path: str | Path) -> tuple[str, str]:
        rel = self.ws.relative(self.ws.resolve_writable(path))
        staged = self._files.get(rel)
        return rel, staged.text if staged is not None else self.ws.read_for_edit(rel)

    def _stage(self, rel: str, text: str) -> None:
        staged = self._files.get(rel)
        if staged is None:
            self._history.append((rel, None))
            original = self.ws.read_for_edit(rel)
            self._files[rel] = _Staged(base=original.encode(), text=text)
        else:
            self._history.append((rel, staged.text))
            staged.text = text

    def _missing_dirs(self, new_files: Iterator[str]) -> list[str]:
        missing: set[str] = set()
        for rel in new_files:
            for parent in Path(rel).parents:
                if parent != Path(".") and not (self.ws.root / parent).exists():
                    missing.add(parent.as_posix())
        return sorted(missing, key=len)

    def _write(self, changes: Sequence[FileChange], new_dirs: Sequence[str]) -> None:
        """Write `after` for each change (None: remove the file), rolling nothing back itself."""
        for d in new_dirs:
            self.ws.resolve_writable(d).mkdir(exist_ok=True)
        for change in changes:
            target = self.ws.resolve_writable(change.path)
            if change.after is None:
                target.unlink(missing_ok=True)
            else:
                write_atomic(target, change.after)
            self.ws.remember(change.path, change.after)


def _occurrences(text: str, sub: str) -> Iterator[int]:
    """Start offsets of every occurrence of `sub`, overlapping ones included."""
    start = text.find(sub)
    while start != -1:
        yield start
        start = text.find(sub, start + 1)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1
