"""`Agent`: one repository (or legal corpus) with its memory store and corpus index, as a library.

    from agent import Agent
    agent = Agent.open("path/to/repo")
    agent.ingest()                         # index + write changed files into memory
    answer = agent.ask("Where is the retry policy configured?")
    print(answer.text, *map(str, answer.citations))

The store lives in `<root>/.l2m/` unless told otherwise; the index shares its database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent.names import name_pins
from l2m_core.address_head import AddressHead, load_address_head
from l2m_core.errors import L2MError
from l2m_core.loading import DEFAULT_MODEL, LoadedModel, load_model
from l2m_core.memory import Answer, BlockSpan, Memory
from l2m_core.reader import Reader, load_reader
from l2m_core.settings import MemorySettings
from l2m_core.store import MANIFEST, STORE_DIR, is_store
from repos_index.index import CorpusIndex
from repos_index.pipeline import UpdateReport
from repos_index.scan import relative_to_root

if TYPE_CHECKING:
    from agent.cluster import Cluster


class _CorpusMemory:
    """The memory as the index's `MemorySink`: files with no text are indexed but hold no blocks."""

    def __init__(self, memory: Memory):
        self.memory = memory

    def ingest_document(self, text: str, source: str) -> list[BlockSpan]:
        return self.memory.ingest_document(text, source) if text.strip() else []

    def retire_document(self, source: str) -> int:
        return self.memory.retire_document(source)

    def live_sources(self) -> dict[str, str]:
        return self.memory.live_sources()


class Agent:
    def __init__(self, root: Path, memory: Memory, index: CorpusIndex):
        self.root, self.memory, self.index = root, memory, index
        memory.enclosing = index.enclosing  # citations and heading blocks come from the index
        memory.referrers = index.referrers

    @classmethod
    def open(cls, root: str | Path = ".", store: str | Path | None = None, model: str | LoadedModel | None = None,
             create: bool = True, settings: MemorySettings | None = None, device: str = "auto",
             address_head: str | Path | AddressHead | None = None, database_url: str | None = None,
             reader: str | Path | Reader | None = None, overrides: dict | None = None) -> Agent:
        """Open (or create, when `create`) the store of `root`; `model` defaults to the store's own model.
        `address_head` (a trained head or its directory) joins BM25 in addressing memory; `reader` (a trained
        reader or its directory, `l2m train --task reader`) acts while questions read; a new store keeps
        its tables in the database at `database_url` (default: SQLite in the store directory). `overrides`
        change an existing store's read-time settings for this session (`Memory.open`)."""
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise L2MError(f"not a directory: {root}")
        store = Path(store) if store else root / STORE_DIR
        exists = is_store(store)
        if not exists and not create:
            raise L2MError(f"no memory store at {store}; run `l2m ingest` first")
        lm = model if isinstance(model, LoadedModel) else load_model(model or _manifest_model(store), device=device)
        if address_head is not None and not isinstance(address_head, AddressHead):
            address_head = load_address_head(address_head, lm.model)
        if reader is not None and not isinstance(reader, Reader):
            reader = load_reader(reader, lm.model)
        memory = Memory.open(store, lm, **(overrides or {})) if exists else Memory.create(store, lm, settings,
                                                                                          database_url)
        memory.address_head, memory.reader = address_head, reader
        if memory.files.manifest.get("root") is None:
            memory.files.update_manifest(root=str(root))
        # a store kept inside the corpus under another name than .l2m is no document (its manifest.json was one)
        inside = Path(store).resolve()
        named = inside.is_relative_to(root) and inside != root and inside.name != STORE_DIR
        own = [f"/{inside.relative_to(root).as_posix()}/"] if named else []
        return cls(root, memory, CorpusIndex(memory.files.engine, root, extra_ignores=own))

    @classmethod
    def from_store(cls, store: str | Path, model: str | LoadedModel | None = None, device: str = "auto",
                   address_head: str | Path | AddressHead | None = None,
                   reader: str | Path | Reader | None = None, overrides: dict | None = None) -> Agent:
        """Open an existing store; its corpus root comes from the store's manifest."""
        return cls.open(store_root(store), store, model, create=False, device=device, address_head=address_head,
                        reader=reader, overrides=overrides)

    def close(self) -> None:
        self.memory.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ingest(self, paths: list[str | Path] | None = None, progress: bool = False,
               cluster: Cluster | None = None) -> UpdateReport:
        """Index `paths` (default: the whole root) and write new or changed files into memory. A path outside
        the root is an error, raised before anything is written. With a `cluster`, Ray workers encode and
        write the documents (the store's tables must be on a database server)."""
        require_inside(self.root, paths or [])
        if cluster is None:
            return self.index.update(_CorpusMemory(self.memory), paths=paths, progress=progress)
        from agent.cluster import ClusterMemory

        with ClusterMemory(self.memory, cluster) as sink:
            return self.index.update(sink, paths=paths, progress=progress)

    def ask(self, question: str, max_new_tokens: int = 96, hops: int = 1, pins: list[int] | None = None) -> Answer:
        """Answer from memory; symbols and sections the question names are pinned into the read set."""
        limit = self.memory.settings.max_read_blocks // 2
        named = name_pins(self.index, question, limit, self.memory.lexical)
        return self.memory.ask(question, max_new_tokens=max_new_tokens, hops=hops, pins=[*(pins or []), *named])

    def ask_many(self, questions: Iterable[tuple[str, int]], cluster: Cluster | None = None,
                 address_head: str | Path | None = None) -> Iterator[Answer | Exception]:
        """Answer each `(question, max_new_tokens)` in order, yielding each answer (or the `L2MError` or
        `ValueError` it failed with) as soon as it and those before it are done; with a `cluster`, Ray
        workers share the questions, each reading this store (with the learned head at `address_head`)."""
        if cluster is not None:
            from agent.cluster import ask_on_cluster

            yield from ask_on_cluster(self.memory, cluster, questions, address_head)
            return
        for question, max_new_tokens in questions:
            try:
                yield self.ask(question, max_new_tokens=max_new_tokens)
            except (L2MError, ValueError) as exc:
                yield exc


def store_root(store: str | Path) -> Path:
    """The corpus root recorded in the manifest of `store` (older stores: the folder holding the store)."""
    store = Path(store)
    manifest = store / MANIFEST
    try:
        root = json.loads(manifest.read_text()).get("root")
    except FileNotFoundError:
        raise L2MError(f"no memory store at {store}; run `l2m ingest` first") from None
    except ValueError:
        raise L2MError(f"{manifest} is damaged (not valid JSON)") from None
    return Path(root) if root else store.resolve().parent


def require_inside(root: Path, paths: list[str | Path]) -> None:
    """Raise `L2MError` for the first of `paths` (absolute, or relative to `root`) outside the corpus root:
    a store indexes one tree, and a path it cannot index must not pass as ingested. A path that does not
    exist is said to be missing first."""
    root = Path(root).resolve()
    for path in paths:
        if relative_to_root(root, path) is None:
            if not (root / path).exists():  # an absolute path joins as itself
                raise L2MError(f"{path}: no such file or directory")
            raise L2MError(f"{path} is outside the corpus root {root}; ingest it into another store (--store) "
                           "or create this one with a root that holds both (--root)")


def _manifest_model(store: Path) -> str | None:
    try:
        name = json.loads((store / MANIFEST).read_text()).get("model")
    except (OSError, ValueError):
        return None
    return None if name in (None, DEFAULT_MODEL) else name
