"""The repository root every tool is confined to, and what each file held when a tool last read it.

Paths from a model are untrusted: `..` is refused outright, absolute paths must lie inside the root,
and symlinks are resolved before the check, so none of them reaches a file outside the repository.
`.git/` and `.l2m/` are readable but never writable (a write to `.git/hooks` would run code later).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pathspec

from l2m_core.errors import L2MError
from l2m_core.store import STORE_DIR

SKIPPED_DIRS = frozenset({".git", STORE_DIR, ".hg", ".svn", "__pycache__", ".venv", "venv", "node_modules",
                          ".pytest_cache", ".ruff_cache", ".mypy_cache", ".tox"})
PROTECTED_DIRS = frozenset({".git", STORE_DIR})
MAX_FILE_BYTES = 10_000_000  # larger files are data, not something to view or edit line by line


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text exactly as stored (no newline translation), or `L2MError` for a binary file."""
    if b"\0" in data[:8192]:
        raise L2MError(f"{name} is a binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise L2MError(f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


class Workspace:
    """A repository root: confines paths to it and remembers each file's hash when last read."""

    def __init__(self, root: str | Path):
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise L2MError(f"repository root {root} is not a directory")
        self.root = root_path.resolve()
        self._read_hashes: dict[str, str] = {}

    def resolve(self, path: str | Path) -> Path:
        """The absolute path for `path` (relative to the root, or absolute inside it), symlinks resolved.

        Raises `L2MError` for an empty path, any `..` component, or a target outside the root.
        """
        text = str(path).strip()
        if not text:
            raise L2MError("empty path")
        given = Path(text)
        if ".." in given.parts:
            raise L2MError(f"{text}: '..' is not allowed in paths")
        target = (given if given.is_absolute() else self.root / given).resolve()
        if not target.is_relative_to(self.root):
            raise L2MError(f"{text} is outside the repository {self.root}")
        return target

    def resolve_writable(self, path: str | Path) -> Path:
        """Like `resolve`, and refuses paths inside `.git/` or `.l2m/` and the root itself."""
        target = self.resolve(path)
        parts = target.relative_to(self.root).parts
        if not parts:
            raise L2MError(f"{path} is the repository root, not a file")
        if parts[0] in PROTECTED_DIRS:
            raise L2MError(f"{path}: files under {parts[0]}/ are not editable")
        return target

    def relative(self, path: str | Path) -> str:
        """The POSIX path of `path` relative to the root (after confinement)."""
        return self.resolve(path).relative_to(self.root).as_posix() or "."

    def read_bytes(self, path: str | Path) -> bytes:
        target = self.resolve(path)
        if not target.exists():
            raise L2MError(f"{path} does not exist")
        if not target.is_file():
            raise L2MError(f"{path} is not a file")
        if target.stat().st_size > MAX_FILE_BYTES:
            raise L2MError(f"{path} is larger than {MAX_FILE_BYTES:,} bytes; the tools leave it alone")
        return target.read_bytes()

    def read_text(self, path: str | Path) -> str:
        """The file's text; remembers its hash as what the caller has now seen."""
        data = self.read_bytes(path)
        text = decode_text(data, str(path))
        self._read_hashes[self.relative(path)] = sha256(data)
        return text

    def read_for_edit(self, path: str | Path) -> str:
        """The file's text for editing: refuses a file that changed on disk since it was last read here."""
        self.resolve_writable(path)
        data = self.read_bytes(path)
        seen = self._read_hashes.get(self.relative(path))
        if seen is not None and seen != sha256(data):
            raise L2MError(f"{path} changed on disk since it was read; view it again before editing")
        return self.read_text(path)

    def remember(self, path: str | Path, data: bytes | None) -> None:
        """Record what a tool itself wrote (None: the file was removed)."""
        rel = self.relative(path)
        if data is None:
            self._read_hashes.pop(rel, None)
        else:
            self._read_hashes[rel] = sha256(data)

    def list_files(self) -> list[str]:
        """Every file under the root as a relative POSIX path, sorted; skips VCS, caches and .gitignore'd paths."""
        return sorted(self._walk())

    def _walk(self) -> Iterator[str]:
        ignore = self._gitignore()
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS and not ignore.match_file(f"{base / d}/")]
            for name in filenames:
                rel = (base / name).as_posix()
                full = Path(dirpath, name)
                if ignore.match_file(rel) or (full.is_symlink() and not full.resolve().is_relative_to(self.root)):
                    continue
                yield rel

    def _gitignore(self) -> pathspec.GitIgnoreSpec:
        path = self.root / ".gitignore"
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        return pathspec.GitIgnoreSpec.from_lines(lines)


def write_atomic(target: Path, data: bytes) -> None:
    """Replace `target` with `data` in one step (temporary file + rename), keeping its permission bits."""
    mode = target.stat().st_mode if target.exists() else None
    tmp = target.with_name(f".{target.name}.l2m-tmp")
    tmp.write_bytes(data)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, target)
