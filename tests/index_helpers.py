"""Shared by the corpus-index tests: a recording stand-in for the memory engine, fixture paths."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import repos_index.scan as scan_module

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class FakeBlock:
    block_id: int
    line_start: int
    line_end: int


@dataclass
class FakeMemory:
    """Implements `MemorySink` the way the engine behaves: a document becomes blocks of a few lines
    each, with ids that never repeat, and a blank document becomes no blocks (so no live source);
    every call is recorded. Ingesting the text a source already holds returns its blocks; ingesting other
    text over live blocks is an error here, so a pipeline that forgets to retire first fails loudly."""

    lines_per_block: int = 4
    calls: list[tuple[str, str]] = field(default_factory=list)
    docs: dict[str, tuple[str, list[FakeBlock]]] = field(default_factory=dict)
    fail_on: set[str] = field(default_factory=set)
    interrupt_on: set[str] = field(default_factory=set)
    _next_id: int = 1

    def ingest_document(self, text: str, source: str) -> list[FakeBlock]:
        self.calls.append(("ingest", source))
        if source in self.interrupt_on:
            raise KeyboardInterrupt
        if source in self.fail_on:
            raise RuntimeError(f"engine rejected {source}")
        sha = hashlib.sha256(text.encode()).hexdigest()
        if source in self.docs and self.docs[source][0] == sha:
            return self.docs[source][1]
        assert source not in self.docs, f"{source} ingested over its live blocks"
        if not text.strip():
            return []
        count = text.count("\n") + 1
        blocks = []
        for start in range(1, count + 1, self.lines_per_block):
            blocks.append(FakeBlock(self._next_id, start, min(start + self.lines_per_block - 1, count)))
            self._next_id += 1
        self.docs[source] = (sha, blocks)
        return blocks

    def retire_document(self, source: str) -> int:
        self.calls.append(("retire", source))
        return len(self.docs.pop(source, ("", []))[1])

    def live_sources(self) -> dict[str, str]:
        return {source: sha for source, (sha, _) in self.docs.items()}

    def take_calls(self) -> list[tuple[str, str]]:
        calls, self.calls = self.calls, []
        return calls


def copy_fixture(name: str, destination: Path) -> Path:
    """A writable copy of `tests/fixtures/<name>`."""
    target = destination / name
    shutil.copytree(FIXTURES / name, target)
    return target


def make_unreadable(path: Path, monkeypatch) -> None:
    """chmod 000; as root permissions do not stop reads, so the scan's read itself is made to fail."""
    path.chmod(0)
    if os.geteuid() == 0:
        real = scan_module.read_prefix

        def refuse(candidate: Path, *args):
            if Path(candidate) == path:
                raise PermissionError(13, "Permission denied", str(path))
            return real(candidate, *args)

        monkeypatch.setattr(scan_module, "read_prefix", refuse)
