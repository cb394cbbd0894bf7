"""Every supported decoder family, on tiny random models: the read path is exact (all blocks read with the fp32
codec give the plain model's next-token logits, with and without a reading head), the CLI ingests and answers
with `--model DIR`, and a store refuses another model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from l2m_core.attention import RecordPlan, active
from l2m_core.errors import L2MError
from l2m_core.families import FAMILIES, check_supported
from l2m_core.loading import LoadedModel
from l2m_core.memory import Memory
from l2m_core.rope import Rotary
from l2m_core.settings import MemorySettings
from l2m_core.tiny import TINY_FAMILIES, byte_tokenizer, save_tiny_model, tiny_model

DOC = "\n".join(f"Line {i}: the {['red', 'green', 'blue'][i % 3]} lamp number {i * 7} glows." for i in range(1, 9))
HEAD = "<|im_start|>user\nAnswer the question using the context.\n\nContext:\n"
TAIL = " and then the lamp"
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
EXACT = MemorySettings(block_size=16, chunk_size=32, sink=16, local=4096, max_read_blocks=64, codec="fp32",
                       hot_budget_mb=4, contiguous=True)


def test_every_tiny_family_is_a_supported_family():
    assert {tiny_model(family).config.model_type for family in TINY_FAMILIES} == set(FAMILIES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("head", ["", HEAD], ids=["bare", "reading-head"])
@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_reading_every_block_equals_the_plain_model(family, head, device, tmp_path):
    """Blocks written after a head and read after it (at contiguous positions) give the plain model's logits
    over `[head | document | tail]`, with the model's own attention and masks (windows crossed)."""
    tokenizer = byte_tokenizer()
    model = tiny_model(family, seed=1).to(device)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    doc, tail = encode(DOC), encode(TAIL)
    assert len(doc) > 4 * (getattr(model.config, "sliding_window", None) or 48)  # windows bind
    with torch.inference_mode():
        plain = model(torch.tensor([encode(head) + doc + tail], device=device)).logits[0, -1]
    lm = LoadedModel(model, tokenizer, family, "x", torch.device(device), 0.0)
    mem = Memory.create(tmp_path / "s", lm, replace(EXACT, reading_head=head))
    mem.ingest_document(DOC, "doc.txt")
    pins = mem.blocks_for("doc.txt")
    ours = mem.logits(tail, pins=pins, head=head)
    assert torch.allclose(ours, plain, atol=1e-4), (ours - plain).abs().max()
    # the tolerance tells reading apart: without the last block (inside every window) the logits move by more
    assert not torch.allclose(ours, mem.logits(tail, pins=pins[:-1], head=head), atol=1e-4)


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_stored_keys_do_not_depend_on_where_they_were_written(family):
    """Un-rotating with the layer's rotary (per layer type in Gemma 3, none in SmolLM3's NoPE layers, partial in
    Phi-3) leaves the same keys whatever positions the text was written at. The exactness test cannot see a
    wrong rotary: reading everything puts blocks back at the positions they were written at."""
    model = tiny_model(family, seed=1)
    model.set_attn_implementation("l2m")
    rotary = Rotary(model)
    ids = torch.tensor([byte_tokenizer()(DOC[:40], add_special_tokens=False)["input_ids"]])

    def recorded(start: int) -> list[torch.Tensor]:
        plan = RecordPlan(rotary, None, None, torch.arange(start, start + ids.shape[1]))
        with torch.inference_mode(), active(plan):
            model(ids, position_ids=plan.positions[None], use_cache=False)
        return [plan.keys[layer] for layer in range(model.config.num_hidden_layers)]

    for layer, (at_0, at_300) in enumerate(zip(recorded(0), recorded(300), strict=True)):
        assert torch.allclose(at_0, at_300, atol=1e-4), (layer, (at_0 - at_300).abs().max())


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_the_engine_keeps_the_plain_model_exact_outside_a_read(family):
    """Once the engine's attention is set, the bare model still applies sliding windows, soft-capping and a
    caller's padding mask."""
    model = tiny_model(family, seed=2)
    ids = byte_tokenizer()(DOC)["input_ids"]
    batch = torch.tensor([ids, [0] * 7 + ids[:-7]])            # the second row left-padded
    padding = torch.ones_like(batch)
    padding[1, :7] = 0
    with torch.inference_mode():
        before = model(batch, attention_mask=padding).logits[:, -1]
        model.set_attn_implementation("l2m")
        after = model(batch, attention_mask=padding).logits[:, -1]
    assert torch.allclose(before, after, atol=1e-4), (before - after).abs().max()


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_cli_ingests_and_answers_and_refuses_another_model(family, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "lamps.txt").write_text(DOC + "\n")
    model_dir = save_tiny_model(tmp_path / "model", seed=1, family=family)
    other = save_tiny_model(tmp_path / "other", seed=2, family=family)
    monkeypatch.chdir(repo)
    runner = CliRunner()
    ingest = runner.invoke(cli, ["ingest", "--model", str(model_dir), "--json"])
    assert ingest.exit_code == 0, ingest.output
    ask = runner.invoke(cli, ["ask", "Which lamp is blue?", "--max-tokens", "3", "--json"])
    assert ask.exit_code == 0, ask.output
    assert [c["source"] for c in json.loads(ask.stdout)["citations"]] == ["lamps.txt"]
    refused = runner.invoke(cli, ["ask", "Which lamp is blue?", "--model", str(other)])
    assert refused.exit_code == 2 and "was built with model" in refused.stderr, refused.output


@pytest.mark.parametrize("model_type", ["gpt2", "cohere", "helium", "gemma3"])
def test_unsupported_families_are_refused_in_one_line(model_type):
    config = type("Config", (), {"model_type": model_type})()
    with pytest.raises(L2MError, match=f"does not support '{model_type}' models yet") as err:
        check_supported(config)
    assert "\n" not in str(err.value)


def test_cli_refuses_an_unsupported_family_in_one_line(tmp_path, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    model_dir = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300)).save_pretrained(model_dir)
    byte_tokenizer().save_pretrained(model_dir)
    (tmp_path / "a.txt").write_text(DOC)
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(cli, ["ingest", "--model", str(model_dir)])
    assert done.exit_code == 2 and done.stderr.strip().count("\n") == 0
    assert "does not support 'gpt2' models yet" in done.stderr and "Traceback" not in done.output
