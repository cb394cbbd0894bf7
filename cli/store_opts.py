"""Finding and opening the memory store a command works on, and the options every such command shares."""

from __future__ import annotations

from pathlib import Path

import click

from l2m_core.errors import L2MError

STORE_DIR = ".l2m"


def find_store(explicit: str | None) -> Path:
    """`--store`, else the nearest `.l2m/` from the current directory upwards."""
    if explicit:
        return Path(explicit)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / STORE_DIR / "manifest.json").is_file():
            return folder / STORE_DIR
    raise L2MError("no memory store here or in any parent directory; run `l2m ingest PATH` first or pass --store")


def store_model(store: Path, explicit: str | None) -> str | None:
    """The model a store was built with (its manifest), unless `--model` says otherwise."""
    if explicit:
        return explicit
    import json

    try:
        name = json.loads((store / "manifest.json").read_text()).get("model")
    except (OSError, ValueError):
        return None
    from l2m_core.loading import DEFAULT_MODEL

    return None if name in (None, DEFAULT_MODEL) else name


def store_options(func):
    """--store, --model, --json."""
    func = click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")(func)
    func = click.option("--model", "model_spec", default=None,
                        help="Hub id, local model directory or .gguf file (default: the store's model).")(func)
    func = click.option("--store", default=None, help="Store directory (default: nearest .l2m/).")(func)
    return func
