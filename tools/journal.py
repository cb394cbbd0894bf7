"""The persistent undo journal: one entry per applied change set, with every file's previous bytes.

Entries live on disk (`<root>/.l2m/undo/000001/...` by default), so a later process can undo what an
earlier one applied. An entry is undone only while its files still hold exactly what it wrote; a file
changed since is reported and nothing is touched. The journal holds file contents, so it is user-only:
directories 0700, files 0600.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from l2m_core.errors import L2MError
from l2m_core.store import create_private_file
from tools.workspace import Workspace, sha256, write_atomic

# Each undo entry's own list of its files (paths, saved blobs, hashes): not a memory store's manifest
# (`l2m_core.store.MANIFEST`). The file keeps its name so journals written before stay readable.
ENTRY_INDEX = "manifest.json"


@dataclass(frozen=True)
class FileChange:
    """One file of an applied change set: its bytes before and after (None: the file did not exist)."""

    path: str
    before: bytes | None
    after: bytes | None


class UndoJournal:
    """Applied change sets, newest last, stored under `directory`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def entries(self) -> list[str]:
        """Entry ids, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if (p / ENTRY_INDEX).is_file())

    def record(self, changes: Sequence[FileChange], created_dirs: Sequence[str] = ()) -> str:
        """Store a change set about to be applied; returns its entry id."""
        entry = self._new_entry_dir()
        files = {}
        for i, change in enumerate(changes):
            blob = None
            if change.before is not None:
                blob = f"{i}.before"
                _write_private(entry / blob, change.before)
            after = None if change.after is None else sha256(change.after)
            files[change.path] = {"before": blob, "after": after}
        manifest = {"files": files, "dirs": list(created_dirs)}
        _write_private(entry / ENTRY_INDEX, json.dumps(manifest, indent=1).encode())
        return entry.name

    def discard(self, entry_id: str) -> None:
        shutil.rmtree(self.directory / entry_id, ignore_errors=True)

    def undo(self, ws: Workspace, path: str | None = None) -> list[str]:
        """Restore the newest entry (or only `path`, from the newest entry touching it); returns the files restored."""
        rel = None if path is None else ws.relative(path)
        entry_id = self._pick(rel)
        manifest = self._manifest(entry_id)
        names = [rel] if rel is not None else list(manifest["files"])
        for name in names:
            current = ws.resolve_writable(name)
            now = sha256(current.read_bytes()) if current.is_file() else None
            if now != manifest["files"][name]["after"]:
                raise L2MError(f"cannot undo: {name} changed since the edit was applied")
        entry = self.directory / entry_id
        for name in names:
            blob = manifest["files"].pop(name)["before"]
            target = ws.resolve_writable(name)
            if blob is None:
                target.unlink(missing_ok=True)
                ws.remember(name, None)
            else:
                data = (entry / blob).read_bytes()
                write_atomic(target, data)
                ws.remember(name, data)
        if manifest["files"]:
            (entry / ENTRY_INDEX).write_text(json.dumps(manifest, indent=1))
        else:
            for d in sorted(manifest["dirs"], key=len, reverse=True):
                folder = ws.resolve_writable(d)
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            self.discard(entry_id)
        return names

    def _pick(self, rel: str | None) -> str:
        entries = self.entries()
        if rel is not None:
            entries = [e for e in entries if rel in self._manifest(e)["files"]]
        if not entries:
            raise L2MError("nothing to undo" if rel is None else f"no applied edit of {rel} to undo")
        return entries[-1]

    def _manifest(self, entry_id: str) -> dict:
        return json.loads((self.directory / entry_id / ENTRY_INDEX).read_text())

    def _new_entry_dir(self) -> Path:
        """A fresh numbered entry; `mkdir` is atomic, so two processes never share one."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)  # also a journal made before it was user-only
        existing = [int(p.name) for p in self.directory.iterdir() if p.name.isdigit()]
        number = max(existing, default=0) + 1
        while True:
            entry = self.directory / f"{number:06d}"
            try:
                entry.mkdir(mode=0o700)
                return entry
            except FileExistsError:
                number += 1


def _write_private(path: Path, data: bytes) -> None:
    create_private_file(path)
    path.write_bytes(data)
