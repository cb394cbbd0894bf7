"""What every command shares: one-line errors, JSON or text output."""

from __future__ import annotations

import json
from pathlib import Path

import click

from l2m_core.errors import L2MError
from l2m_core.store import STORE_DIR, is_store


class L2MGroup(click.Group):
    """A click group that turns `L2MError` into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except L2MError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def emit(data: dict, as_json: bool, text: str) -> None:
    """Print `text` for people, or `data` as one JSON object with `--json`."""
    click.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


def find_store(explicit: str | None) -> Path | None:
    """`--store`, else the nearest `.l2m/` from the current directory upwards (None if there is none)."""
    if explicit:
        return Path(explicit)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if is_store(folder / STORE_DIR):
            return folder / STORE_DIR
    return None


def open_agent(store: str | None, model: str | None, device: str = "auto", address_head: Path | None = None,
               reader: str | None = None, answers: bool = False):
    """The agent of an existing store (`--store` or the nearest `.l2m/`), with a learned address head and a
    trained reader if given (`reader` "none": the plain read path). `answers`: the command answers from the
    stored documents, so a store that holds none is refused, before the model is loaded (an answer from an
    empty memory is the plain model's, with no sources: it must not pass for one read from the corpus)."""
    path = find_store(store)
    if path is None:
        raise L2MError("no memory store here or in any parent directory; run `l2m ingest PATH` first or pass --store")
    if answers and not stored_documents(path):
        raise L2MError(f"the memory store {path} holds no documents; run `l2m ingest PATH` first")
    from agent import Agent  # torch and the model's libraries: after the checks that need neither

    return Agent.from_store(path, model, device=device, address_head=address_head,
                            reader=None if reader in (None, "none") else Path(reader))


def stored_documents(path: Path) -> int:
    """How many documents the store at `path` holds, read without loading its model (`L2MError` when the store
    does not open)."""
    from l2m_core.store import StoreFiles

    files = StoreFiles.open(Path(path))
    try:
        return files.document_count()
    finally:
        files.engine.dispose()


address_head_option = click.option(
    "--address-head", type=click.Path(path_type=Path), default=None,
    help="Address memory with this trained head (l2m train --task address-head) fused with BM25.")

reader_option = click.option(
    "--reader", default=None, metavar="PATH|none",
    help="Read memory with this trained reader (l2m train --task reader); none: the plain read path [none].")


def store_options(func):
    """--store, --model, --device, --json: shared by every command that works on a store."""
    for option in (
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts)."),
        click.option("--device", default="auto", show_default=True, help="cpu, cuda, or auto."),
        click.option("--model", "model_spec", default=None,
                     help="Hub id, model directory or .gguf file (default: the store's model)."),
        click.option("--store", default=None, help="Store directory (default: the nearest .l2m/)."),
    ):
        func = option(func)
    return func


def cluster_options(func):
    """--ray-address and --workers: run on a Ray cluster (`cluster_from` turns them into a `Cluster`)."""
    for option in (
        click.option("--workers", type=int, default=None,
                     help="Ray worker actors, each loading the model once (default 2; needs --ray-address)."),
        click.option("--ray-address", envvar="L2M_RAY_ADDRESS", default=None,
                     help="Run on the Ray cluster at this address (host:port; also $L2M_RAY_ADDRESS); the store's "
                          "tables must be on a database server. Needs pip install 'l2m[cluster]'."),
    ):
        func = option(func)
    return func


def cluster_from(ray_address: str | None, workers: int | None):
    """The `Cluster` the options name, None without --ray-address; Ray's absence is a one-line error here,
    before any model is loaded."""
    if not ray_address:
        if workers is not None:
            raise L2MError("--workers needs --ray-address (or $L2M_RAY_ADDRESS)")
        return None
    from agent.cluster import Cluster, check_ray

    check_ray()
    return Cluster(ray_address, workers if workers is not None else 2)
