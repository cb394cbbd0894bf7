"""A stand-in for `l2m_core.memory.Memory` with the interface the l2m eval method uses.

It keeps documents as JSON in its store directory, logs every call, splits documents into 64-character
blocks, and "answers" by reading the block that holds the question's key words, so tests can check the
method's plumbing (base stores, forks, patched parts, addressing recall) without a model.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

BLOCK_CHARS = 64
CALLS: list[tuple] = []


@dataclass
class FakeAnswer:
    text: str
    read_set: dict[int, list[int]]
    lexical: list[int]


class FakeMemory:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.docs: dict[str, str] = json.loads((self.path / "docs.json").read_text())

    @classmethod
    def create(cls, path, lm, settings=None):
        CALLS.append(("create", str(path)))
        Path(path).mkdir(parents=True)
        (Path(path) / "docs.json").write_text("{}")
        return cls(path)

    @classmethod
    def open(cls, path, lm):
        CALLS.append(("open", str(path)))
        return cls(path)

    def fork(self, path):
        CALLS.append(("fork", str(path)))
        shutil.copytree(self.path, path)
        return type(self)(path)

    def ingest_document(self, text, source):
        CALLS.append(("ingest", source))
        self.docs[source] = text
        self._save()

    def retire_document(self, source):
        CALLS.append(("retire", source))
        del self.docs[source]
        self._save()

    def block_at(self, source, char_offset):
        sources = sorted(self.docs)
        if source not in self.docs or not 0 <= char_offset < len(self.docs[source]):
            return None
        return sources.index(source) * 100_000 + char_offset // BLOCK_CHARS

    def ask(self, question, instruction=None, max_new_tokens=32, hops=1):
        """Reads the blocks of the pass-key needle: layer 0 reads them, layer 1 reads nothing."""
        CALLS.append(("ask", question, instruction))
        for source, text in self.docs.items():
            found = re.search(r"The pass key is (\d+)\. Remember it\. \1 is the pass key\.", text)
            if found:
                blocks = sorted({self.block_at(source, i) for i in range(found.start(), found.end())})
                return FakeAnswer(f"The pass key is {found.group(1)}.", {0: blocks, 1: []}, blocks)
        return FakeAnswer("I do not know.", {0: [], 1: []}, [])

    def close(self):
        CALLS.append(("close", str(self.path)))

    def _save(self):
        (self.path / "docs.json").write_text(json.dumps(self.docs))
