"""`l2m train`: train an LM2 memory adapter on a beyond-the-window task, (`--task address-head`) the
memory engine's learned addressing head, or (`--task reader`) a reader for a store (register with
`cli.add_command(train)`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cli.common import emit, open_agent
from l2m_core.errors import L2MError

_TINY = "tiny"


def _load_base(spec: str | None, device: str, dtype: str, seed: int):
    """(model, tokenizer, name): the given model frozen, or `tiny`, a tiny Llama to train from scratch."""
    if spec == _TINY:
        from l2m_core.loading import resolve_device
        from l2m_core.tiny import byte_tokenizer, tiny_llama

        return tiny_llama(seed=seed).to(resolve_device(device)), byte_tokenizer(), _TINY
    from l2m_core.loading import load_model

    loaded = load_model(spec, device=device, dtype=dtype)
    return loaded.model, loaded.tokenizer, loaded.name


def parse_layers(text: str) -> list[int]:
    """`--layers` ("15,17,19"): decoder layer numbers; empty means the default."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise L2MError(f"--layers takes comma-separated layer numbers, not {text!r}") from exc


def _progress(event: dict) -> None:
    kind = event.pop("event")
    click.echo(f"{kind:6} " + "  ".join(f"{k} {v}" for k, v in event.items()), err=True)


@click.command()
@click.option("--task", default="babi-qa1", show_default=True,
              help="kv (key-value recall), babi-qa1..babi-qa5, address-head (the memory engine's learned "
                   "addressing; uses --steps, --batch-size, --lr, --layers, --eval-examples, --samples, "
                   "--haystack-tokens, --time-budget, --seed), or reader (a LoRA that reads the store at --store; "
                   "uses --steps, --batch-size, --lr, --lora-rank [8], --reader-mlp, --eval-every, --eval-examples, "
                   "--held-out, --per-document, --passkeys, --time-budget, --seed).")
@click.option("--model", "model_spec", default=None,
              help="Hub id, local directory or .gguf path (default: the embedded model), or 'tiny' for a tiny "
                   "random Llama (use with --end-to-end).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for checkpoint/, adapter/ (and base/ with --end-to-end).")
@click.option("--memory-adapter", type=click.Path(path_type=Path), default=None,
              help="Start from this trained adapter instead of a fresh memory.")
@click.option("--steps", default=300, show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--segment-len", type=int, default=None, help="Tokens per segment [kv: 12, bAbI: 64].")
@click.option("--gap", default=2, show_default=True, help="kv: filler segments between the facts and the question.")
@click.option("--facts", default=2, show_default=True, help="kv: key-value facts per example.")
@click.option("--tbptt", default=0, show_default=True, help="Segments per backpropagation window (0: all).")
@click.option("--slots", default=16, show_default=True, help="Memory slots per layer.")
@click.option("--heads", default=4, show_default=True, help="Memory attention heads.")
@click.option("--attn-dim", type=int, default=None, help="Memory attention width [min(hidden, 128)].")
@click.option("--layers", default="", help="Comma-separated decoder layers that get memory [all].")
@click.option("--aux-weight", default=1.0, show_default=True, help="Weight of the retrieval objective (0: off).")
@click.option("--lora-rank", default=0, show_default=True, help="Also train LoRA (q_proj, v_proj) of this rank.")
@click.option("--end-to-end", is_flag=True, help="Train the base model too (for a model trained from scratch).")
@click.option("--eval-every", default=50, show_default=True)
@click.option("--eval-examples", default=128, show_default=True)
@click.option("--checkpoint-every", default=100, show_default=True)
@click.option("--time-budget", type=float, default=None, help="Stop after this many seconds (and save).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.")
@click.option("--baseline", is_flag=True, help="Also evaluate the same model without memory.")
@click.option("--samples", default=120, show_default=True, help="address-head: training samples per family.")
@click.option("--haystack-tokens", default=8192, show_default=True,
              help="address-head: novel tokens in the store every sample competes with.")
@click.option("--store", default=None, help="reader: the store to train on [the nearest .l2m/].")
@click.option("--held-out", default=0.2, show_default=True, help="reader: share of documents held out.")
@click.option("--per-document", default=8, show_default=True, help="reader: samples per document at most.")
@click.option("--passkeys", default=0, show_default=True,
              help="reader: pass-key samples added (novel passages from the data folder, $L2M_DATA).")
@click.option("--reader-mlp", is_flag=True, help="reader: adapt the MLP projections too.")
@click.option("--targets", type=click.Choice(["span", "oracle"]), default="span", show_default=True,
              help="reader: answer with the bare span, or with the model's own reply to the question with the "
                   "evidence pasted (where it holds the span).")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def train(task: str, model_spec: str | None, out_dir: Path, memory_adapter: Path | None, steps: int,
          batch_size: int, lr: float, segment_len: int | None, gap: int, facts: int, tbptt: int, slots: int,
          heads: int, attn_dim: int | None, layers: str, aux_weight: float, lora_rank: int, end_to_end: bool,
          eval_every: int, eval_examples: int, checkpoint_every: int, time_budget: float | None, resume: bool,
          baseline: bool, samples: int, haystack_tokens: int, store: str | None, held_out: float, per_document: int,
          passkeys: int, reader_mlp: bool, targets: str, seed: int, device: str, dtype: str, as_json: bool) -> None:
    """Train the learned (LM2) memory segment by segment; save checkpoints and a safetensors adapter.

    The question of every example sits segments after the facts it needs, beyond the attention window,
    so only the memory can carry them. Progress (loss, eval accuracy) goes to stderr.

    With `--task address-head`, OUT receives address_head.safetensors/.json instead: a head that ranks memory
    blocks from the model's keys, for `l2m ask --address-head OUT`.

    With `--task reader`, OUT receives reader.safetensors/.json: a LoRA trained on questions generated from
    the store's own documents, read the way `l2m ask` reads, for `l2m ask --reader OUT`.
    """
    if task == "address-head":
        _train_address_head(model_spec, out_dir, steps, batch_size, lr, layers, eval_examples, samples,
                            haystack_tokens, time_budget, seed, device, dtype, as_json)
        return
    if task == "reader":
        from l2m_core.training.reader import ReaderConfig

        config = ReaderConfig(steps=steps, batch_size=batch_size, lr=lr, rank=lora_rank or 8, mlp=reader_mlp,
                              eval_every=eval_every, eval_samples=eval_examples, seed=seed, time_budget=time_budget)
        _train_reader(store, model_spec, device, out_dir, config, held_out, per_document, passkeys, targets, as_json)
        return
    import torch

    from l2m_core.lm2 import MemoryConfig, attach_memory
    from l2m_core.training.lm2_tasks import make_task
    from l2m_core.training.lm2_trainer import TrainConfig, Trainer

    model, tokenizer, name = _load_base(model_spec, device, dtype, seed)
    torch.manual_seed(seed)
    kwargs = {"gap": gap, "facts": facts} if task == "kv" else {}
    the_task = make_task(task, tokenizer, segment_len, **kwargs)
    if memory_adapter is not None:
        memory = attach_memory(model, memory_adapter, tokenizer)
    else:
        saved = out_dir / "checkpoint" / "state.json"
        if resume and saved.is_file():  # the checkpoint's memory shape wins over the flags
            config = MemoryConfig(**json.loads(saved.read_text())["memory"])
        else:
            config = MemoryConfig(hidden_size=model.config.hidden_size, num_layers=model.config.num_hidden_layers,
                                  slots=slots, heads=heads, attn_dim=attn_dim or min(model.config.hidden_size, 128),
                                  layers=parse_layers(layers))
        memory = attach_memory(model, config, tokenizer, lora_rank=lora_rank)
    memory.question_template, memory.segment_len = the_task.question_template, the_task.segment_len
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, tbptt=tbptt, aux_weight=aux_weight,
                         end_to_end=end_to_end, eval_every=eval_every, eval_examples=eval_examples,
                         checkpoint_every=checkpoint_every, time_budget=time_budget, seed=seed)
    trainer = Trainer(memory, the_task, config, out_dir, resume=resume, base_name=name)
    summary = trainer.train(_progress)
    data = {"task": the_task.name, "model": name, "steps": summary["steps"], "seconds": summary["seconds"],
            "accuracy": summary["accuracy"], "adapter": str(out_dir / "adapter")}
    if end_to_end:
        data["base"] = str(out_dir / "base")
    if baseline:
        data["accuracy_without_memory"] = round(trainer.evaluate(use_memory=False), 4)
    emit(data, as_json, "\n".join(f"{k:24} {v}" for k, v in data.items()))


def _train_address_head(model_spec: str | None, out_dir: Path, steps: int, batch_size: int, lr: float, layers: str,
                        eval_examples: int, samples: int, haystack_tokens: int, time_budget: float | None, seed: int,
                        device: str, dtype: str, as_json: bool) -> None:
    """Train the learned addressing head on needle samples (training/address.py) and save it in OUT."""
    import torch

    from l2m_core.loading import LoadedModel, fingerprint
    from l2m_core.training.address import train_address_head

    model, tokenizer, name = _load_base(model_spec, device, dtype, seed)
    lm = LoadedModel(model, tokenizer, name, fingerprint(model), next(model.parameters()).device, 0.0)
    torch.manual_seed(seed)
    summary = train_address_head(lm, out_dir, per_family=samples, eval_per_family=eval_examples // 2,
                                 haystack_tokens=haystack_tokens, layers=parse_layers(layers) or 6, steps=steps,
                                 batch_size=batch_size, lr=lr, seed=seed, time_budget=time_budget, progress=_progress)
    data = {"task": "address-head", "model": name, "steps": summary["steps"], "seconds": summary["seconds"],
            "loss": summary["loss"], "head": str(out_dir)}
    for family, table in summary.get("held_apart", {}).items():
        data[f"recall_{family}"] = {m: table[m] for m in ("bm25", "untrained", "head", "fused_head")}
    emit(data, as_json, "\n".join(f"{k:24} {v}" for k, v in data.items()))


def _train_reader(store: str | None, model_spec: str | None, device: str, out_dir: Path, config, held_out: float,
                  per_document: int, passkeys: int, targets: str, as_json: bool) -> None:
    """Generate samples from the store (pass-key documents go into a temporary copy of it, never into the
    store), train the reader, save it in OUT."""
    import tempfile

    from l2m_core.training.reader import train_reader
    from l2m_core.training.reader_data import corpus_samples, oracle_targets, passkey_reader_samples, split_by_document

    with open_agent(store, model_spec, device) as agent, tempfile.TemporaryDirectory() as scratch:
        memory = agent.memory
        samples = corpus_samples(memory, config.seed, per_document)
        if passkeys:
            memory = agent.memory.fork(Path(scratch) / "store")
            memory.enclosing = agent.memory.enclosing  # a fork keeps the block ids the index knows
            samples += passkey_reader_samples(memory, passkeys, config.seed)
        replaced = 0
        if targets == "oracle":
            def batch_done(done: int, total: int) -> None:
                _progress({"event": "oracle", "replies": f"{done}/{total}"})

            samples, replaced = oracle_targets(memory, samples, progress=batch_done,
                                               batch_size=32 if memory.lm.device.type == "cuda" else 8)
            _progress({"event": "targets", "oracle": replaced, "span": len(samples) - replaced})
        split = split_by_document(samples, held_out, config.seed)
        reader, summary = train_reader(memory, split, config, memory.lm.name, _progress)
        reader.config["recipe"].update(held_out=held_out, per_document=per_document, passkeys=passkeys,
                                       targets=targets, oracle_targets=replaced)
        reader.save(out_dir, curve=summary["curve"], held_out_sources=summary["held_out_sources"])
        if memory is not agent.memory:
            memory.close()
    kept = next(c for c in summary["curve"] if c["step"] == summary["kept_step"])
    data = {"task": "reader", "model": agent.memory.lm.name, "steps": summary["steps"], "seconds": summary["seconds"],
            "kept_step": summary["kept_step"],
            "train_samples": summary["train_samples"], "held_out_samples": summary["held_out_samples"],
            "train_loss": kept["train_loss"], "held_out_loss": kept["held_out_loss"],
            "first_held_out_loss": summary["curve"][0]["held_out_loss"], "reader": str(out_dir)}
    emit(data, as_json, "\n".join(f"{k:24} {v}" for k, v in data.items()))
