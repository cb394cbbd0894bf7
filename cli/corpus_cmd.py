"""`l2m ingest` and `l2m ask`: write a corpus into memory, then ask questions that read it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import click

from cli.common import (
    STORE_DIR,
    address_head_option,
    cluster_from,
    cluster_options,
    emit,
    find_store,
    open_agent,
    reader_option,
    store_options,
)
from l2m_core.errors import L2MError
from l2m_core.store import DATABASE_URL_ENV, is_store


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Corpus root for a new store (default: the folder given, the common folder of the PATHS "
                   "given, else the current directory).")
@click.option("--codec", type=click.Choice(["int8", "int4", "fp16", "fp32"]), default=None,
              help="Cold-tier compression for a new store (default int8).")
@click.option("--database-url", envvar=DATABASE_URL_ENV, default=None,
              help="SQLAlchemy URL of the database for a new store's tables, e.g. postgresql+psycopg://user@host/db "
                   f"(default: SQLite in the store directory). Also read from ${DATABASE_URL_ENV}; a password goes "
                   "there or in $PGPASSWORD, never on the command line.")
@cluster_options
@store_options
def ingest(paths, root, codec, database_url, ray_address, workers, store, model_spec, device, as_json) -> None:
    """Index PATHS (default: the whole root) and write new or changed files into memory.

    PATHS of an existing store must lie under its corpus root."""
    from agent import Agent
    from agent.core import require_inside
    from l2m_core.settings import MemorySettings

    cluster = cluster_from(ray_address, workers)
    written = paths
    paths = [_absolute(p) for p in written]
    given: dict[str, str] = {}  # each path made absolute -> as the user wrote it, for error messages
    for path, as_written in zip(paths, written, strict=True):
        given.setdefault(str(path), str(as_written))
    base = (root.resolve() if root else None) or _common_folder(paths) or Path.cwd().resolve()
    existing = find_store(store) or base / STORE_DIR
    created = None  # what this command makes for a new store, removed again when it indexes nothing
    if is_store(existing):
        agent = Agent.from_store(existing, model_spec, device=device)
    else:
        if paths and not any(p.exists() for p in paths):  # a new store would be made for nothing
            raise L2MError(f"{given[str(paths[0])]}: no such file or directory")
        require_inside(base, paths)  # before the new store is created
        settings = MemorySettings(codec=codec) if codec else None
        if cluster is not None and not database_url:
            raise L2MError("a cluster ingest writes into a database server: give the new store one with "
                           "--database-url postgresql+psycopg://USER@HOST/DB")
        if database_url and urlsplit(database_url).password and database_url != os.environ.get(DATABASE_URL_ENV):
            raise L2MError(f"put the database password in ${DATABASE_URL_ENV} or $PGPASSWORD, not on the command "
                           "line: other users can read it there, and later commands look for it in the environment")
        created = _NewStore(existing)
        agent = Agent.open(base, existing, model_spec, settings=settings, device=device, database_url=database_url)
    with agent:
        report = agent.ingest(paths or None, progress=not as_json, cluster=cluster)
        stats = agent.memory.stats()
    problems = [f"{given.get(path, path)}: no such file or directory" for path in report.skipped.get("missing", [])]
    problems += [f"{path}: {why}" for path, why in report.errors.items()]
    problems += [f"{_as_given(agent.root, where, given)}: nothing to index there"
                 for where in report.warnings.get("nothing_to_index", [])]
    if created is not None and not stats["documents"]:  # a new store holding nothing: no store at all
        created.remove()
        if as_json:
            emit({**report.as_dict(), "store": None, "memory": {"documents": 0, "blocks": 0, "tokens": 0}}, True, "")
        problems = problems or [f"{where}: nothing to index there" for where in (list(given.values()) or
                                                                                  [str(agent.root)])]
    else:
        data = {**report.as_dict(), "store": str(agent.memory.files.path),
                "memory": {k: stats[k] for k in ("documents", "blocks", "tokens")}}
        emit(data, as_json, report.summary() + f"\nmemory: {stats['documents']} documents, {stats['blocks']} "
                                               f"blocks, {stats['tokens']} tokens in {agent.memory.files.path}")
    for line in problems:
        click.echo(f"error: {line}", err=True)
    if problems:
        raise SystemExit(1)


class _NewStore:
    """What creating a store at `path` adds (the folder and the folders above it that do not exist yet, or the
    entries new in a folder that does), so that a store that got nothing can be removed again without
    touching anything that was there before."""

    def __init__(self, path: Path):
        self.path = path
        self.folders = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
        self.before = set(path.iterdir()) if path.is_dir() else set()

    def remove(self) -> None:
        """Remove what was added (call once the store is closed)."""
        if self.path.is_dir():
            for entry in set(self.path.iterdir()) - self.before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        for folder in self.folders:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): leave it and the folders above it
                break


def _as_given(root: Path, where: str, given: dict[str, str]) -> str:
    """The root-relative path `where` of an ingest report ("." for the root) as the user wrote it, else as an
    absolute path."""
    from repos_index.scan import relative_to_root

    relative = "" if where == "." else where
    for absolute, written in given.items():
        if relative_to_root(root, absolute) == relative:
            return written
    return str(root / relative) if relative else str(root)


def _absolute(path: Path) -> Path:
    """`path` made absolute with its folder's links resolved (the store's root is resolved), its own name kept:
    a linked file is indexed under its own name."""
    path = Path(os.path.abspath(path))
    return path.parent.resolve() / path.name if path.name else path


def _common_folder(paths: list[Path]) -> Path | None:
    """The corpus root a new store over `paths` gets: the folder given, or the folder holding all of them."""
    if not paths:
        return None
    return Path(os.path.commonpath([p if p.is_dir() else p.parent for p in paths]))


@click.command()
@click.argument("question")
@click.option("--max-tokens", default=96, show_default=True, help="Longest answer, in tokens.")
@click.option("--hops", default=1, show_default=True, help="Reads chained by re-addressing with the draft answer.")
@click.option("--pin", "pins", multiple=True, metavar="FILE[:START-END]",
              help="Read these lines in every layer (repeatable).")
@click.option("--memory-adapter", type=click.Path(exists=True, path_type=Path), default=None,
              help="Answer with a trained LM2 learned memory (l2m train) that reads the stored documents.")
@address_head_option
@reader_option
@store_options
def ask(question, max_tokens, hops, pins, memory_adapter, address_head, reader, store, model_spec, device,
        as_json) -> None:
    """Answer QUESTION from memory, citing the file lines the model read."""
    if memory_adapter is not None and reader not in (None, "none"):
        raise L2MError("--reader reads the stored blocks; --memory-adapter answers without them: give one")
    with open_agent(store, model_spec, device, address_head, reader, answers=True) as agent:
        if memory_adapter is not None:
            text = _learned_memory_answer(agent, memory_adapter, question, max_tokens)
            emit({"answer": text, "citations": [], "memory": "learned"}, as_json,
                 f"{text}\n\n(learned memory: no block provenance)")
            return
        pinned = [b for spec in pins for b in _pin_blocks(agent, spec)]
        answer = agent.ask(question, max_new_tokens=max_tokens, hops=hops, pins=pinned)
    cites = "\n".join(f"  {c}  ({c.weight:.0%})" for c in answer.citations[:5])
    emit(answer.to_dict(), as_json, f"{answer.text}\n\nSources (attention mass):\n{cites}")


def _learned_memory_answer(agent, adapter: Path, question: str, max_tokens: int) -> str:
    """The learned memory reads every stored document segment by segment, then answers."""
    from l2m_core.lm2 import attach_memory

    memory = agent.memory
    text = "\n\n".join(memory.block_text(block_id) for block_id in sorted(memory.meta))
    learned = attach_memory(memory.model, adapter, memory.tokenizer)
    return learned.answer(text, question, max_new_tokens=max_tokens)


def _pin_blocks(agent, spec: str) -> list[int]:
    path, _, lines = spec.partition(":")
    start, _, end = lines.partition("-")
    try:
        span = (int(start), int(end or start)) if lines else (None, None)
    except ValueError:
        raise L2MError(f"bad --pin {spec!r}; use FILE or FILE:START-END") from None
    blocks = agent.memory.blocks_for(path, *span)
    if not blocks:
        raise L2MError(f"--pin {spec}: no memory blocks hold that file or those lines")
    return blocks
