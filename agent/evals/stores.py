"""Base memory stores for the l2m method: each haystack is ingested once per model, then reused.

A haystack is split at line ends into documents of about `part_tokens` tokens (`haystack/part-NNN`).
Documents are ingested independently, so a sample's memory is a fork of the base store in which the
one or two parts holding its insertions are retired and ingested again with them. Base stores stay on
disk with a manifest of their parts' digests: a later run with the same haystack opens its store, and a
longer haystack whose first parts are the same forks the closest stored base and ingests only the
parts it lacks.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2m_core.loading import LoadedModel
from l2m_core.training.data import Insertion, insert


def split_parts(text: str, starts: list[int], part_tokens: int) -> list[tuple[int, int]]:
    """Character spans of consecutive parts: each ends at the first line end after `part_tokens` tokens."""
    spans: list[tuple[int, int]] = []
    begin, token = 0, part_tokens
    while token < len(starts):
        cut = text.find("\n", starts[token]) + 1
        if cut <= begin:
            break
        spans.append((begin, cut))
        begin = cut
        token = bisect_right(starts, cut - 1) + part_tokens
    if begin < len(text) or not spans:
        spans.append((begin, len(text)))
    return spans


def part_source(index: int) -> str:
    return f"haystack/part-{index:03d}"


@dataclass
class Patched:
    """A sample's documents: every part's text with its insertions, and where each insertion landed."""

    documents: dict[str, str]
    locations: list[tuple[str, int]]  # (source, character offset) of each insertion, in sample order


def patch(haystack: str, spans: list[tuple[int, int]], insertions: list[Insertion]) -> Patched:
    """Apply `insertions` (offsets into `haystack`) part by part."""
    documents = {part_source(i): haystack[b:e] for i, (b, e) in enumerate(spans)}
    owner = [bisect_right([b for b, _ in spans], ins.offset) - 1 for ins in insertions]
    locations: list[tuple[str, int]] = [("", 0)] * len(insertions)
    for part in sorted(set(owner)):
        begin = spans[part][0]
        mine = [i for i, p in enumerate(owner) if p == part]
        text, starts = insert(haystack[begin:spans[part][1]],
                              [Insertion(insertions[i].text, insertions[i].offset - begin) for i in mine])
        documents[part_source(part)] = text
        for i, start in zip(mine, starts, strict=True):
            locations[i] = (part_source(part), start)
    return Patched(documents, locations)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sync(memory: Any, have: dict[str, str], want: dict[str, str]) -> int:
    """Make `memory` (holding documents with digests `have`) hold the non-empty texts of `want`.

    Retires what differs or is not wanted, ingests what is missing; returns how many it ingested.
    """
    want = {source: text for source, text in want.items() if text}
    for source, old in have.items():
        if source not in want or digest(want[source]) != old:
            memory.retire_document(source)
    fresh = {source: text for source, text in want.items() if have.get(source) != digest(text)}
    for source, text in fresh.items():
        memory.ingest_document(text, source=source)
    return len(fresh)


def engine_digest(api: Any) -> str:
    """A digest of the engine's package sources: a store written by other engine code is not reused."""
    package = Path(inspect.getfile(api)).parent
    return digest("".join(p.read_text(encoding="utf-8") for p in sorted(package.glob("*.py"))))


class BaseStores:
    """Base stores on disk under `root`, keyed by model, memory settings and the parts they hold."""

    def __init__(self, root: Path, lm: LoadedModel, api: Any, settings: Any = None):
        self.root, self.lm, self.api, self.settings = Path(root), lm, api, settings
        self._identity = {"model": lm.fingerprint, "settings": repr(settings), "engine": engine_digest(api)}

    def open(self, parts: dict[str, str]) -> tuple[Any, dict[str, str]]:
        """A memory holding exactly the non-empty `parts`, and their digests (built once, then reused)."""
        digests = {source: digest(text) for source, text in parts.items() if text}
        key = digest(json.dumps([self._identity, sorted(digests.items())]))
        home = self.root / key
        if (home / "parts.json").is_file():
            return self.api.open(home / "store", self.lm), digests
        shutil.rmtree(home, ignore_errors=True)  # an interrupted build has no manifest: start over
        home.mkdir(parents=True)
        donor, have = self._closest(digests)
        if donor is None:
            memory = self._create(home / "store")
        else:
            source_memory = self.api.open(donor / "store", self.lm)
            memory = source_memory.fork(home / "store")
            source_memory.close()
        sync(memory, have, parts)
        (home / "parts.json").write_text(json.dumps({**self._identity, "parts": digests}, indent=1))
        return memory, digests

    def _create(self, directory: Path) -> Any:
        if self.settings is None:
            return self.api.create(directory, self.lm)
        return self.api.create(directory, self.lm, settings=self.settings)

    def _closest(self, digests: dict[str, str]) -> tuple[Path | None, dict[str, str]]:
        """The stored base sharing most parts with `digests` (same model and settings), if any."""
        best, best_parts, best_shared = None, {}, 0
        for manifest in sorted(self.root.glob("*/parts.json")):
            data = json.loads(manifest.read_text())
            if {k: data.get(k) for k in self._identity} != self._identity:
                continue
            shared = sum(digests.get(source) == d for source, d in data["parts"].items())
            if shared > best_shared:
                best, best_parts, best_shared = manifest.parent, data["parts"], shared
        return best, best_parts
