"""`l2m memory stats|verify|compact|clear`: inspect and maintain a store."""

from __future__ import annotations

import shutil

import click

from cli.common import emit, find_store, open_agent, store_options
from l2m_core.errors import L2MError
from l2m_core.store import is_store


@click.group()
def memory() -> None:
    """Inspect and maintain the memory store."""


@memory.command()
@store_options
def stats(store, model_spec, device, as_json) -> None:
    """Documents, blocks, tokens, bytes per token, hot-tier use."""
    with open_agent(store, model_spec, device) as agent:
        data = {**agent.memory.stats(), "index": agent.index.stats()}
    emit(data, as_json, "\n".join(f"{k:20} {v}" for k, v in data.items() if k != "settings"))


@memory.command()
@store_options
def verify(store, model_spec, device, as_json) -> None:
    """Check that the database and the index agree (every file's blocks present exactly once)."""
    with open_agent(store, model_spec, device) as agent:
        problems = agent.memory.verify() + [f"{path}: {why}" for path, why in
                                            agent.index.memory_disagreements(agent.memory).items()]
    emit({"ok": not problems, "problems": problems}, as_json, "\n".join(problems) or "store is consistent")
    if problems:
        raise SystemExit(1)


@memory.command()
@store_options
def compact(store, model_spec, device, as_json) -> None:
    """Reclaim the space of retired blocks."""
    with open_agent(store, model_spec, device) as agent:
        before = agent.memory.stats()["database_bytes"]
        agent.memory.compact()
        after = agent.memory.stats()["database_bytes"]
    emit({"bytes_before": before, "bytes_after": after}, as_json, f"database: {before} -> {after} bytes")


@memory.command()
@click.option("--store", default=None, help="Store directory (default: the nearest .l2m/).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clear(store, yes) -> None:
    """Delete the store (memory, index, transcripts)."""
    path = find_store(store)
    if path is None or not is_store(path):
        raise L2MError("no memory store to clear")
    if not yes:
        click.confirm(f"delete the memory store {path}?", abort=True)
    shutil.rmtree(path)
    click.echo(f"deleted {path}")
