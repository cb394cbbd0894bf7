"""Adapters: safetensors + JSON, reloaded exactly, refused on another base model with one line."""

from __future__ import annotations

import json

import pytest
import torch

from l2m_core.errors import L2MError
from l2m_core.lm2 import attach_memory, read_adapter_config, save_adapter
from l2m_core.lm2.adapter import CONFIG, WEIGHTS
from l2m_core.loading import fingerprint
from l2m_core.tiny import tiny_llama
from tests.lm2_helpers import make_reads_matter, one_thread, random_ids, tiny_with_memory  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(mm, segments):
    with torch.no_grad():
        state = mm.initial_state(1)
        for ids in segments[:-1]:
            state = mm.forward_segment(ids, state=state).state
        return mm.forward_segment(segments[-1], state=state).logits


def test_an_adapter_reloads_to_the_same_outputs(tmp_path):
    mm = tiny_with_memory(seed=0)
    make_reads_matter(mm)
    mm.question_template, mm.segment_len = "Q: {question}\nA:", 12
    segments = [random_ids(1, 12, seed=s) for s in range(3)]
    expected = _run(mm, segments)
    save_adapter(mm, tmp_path / "ad", base_name="tiny", task="kv")
    assert {p.name for p in (tmp_path / "ad").iterdir()} == {WEIGHTS, CONFIG}
    config = read_adapter_config(tmp_path / "ad" / WEIGHTS)
    assert config["base"]["fingerprint"] == fingerprint(mm.model) and config["task"] == "kv"
    assert config["memory"]["slots"] == 4 and config["lora"] is None

    loaded = attach_memory(tiny_llama(seed=0), tmp_path / "ad")
    assert torch.equal(_run(loaded, segments), expected)
    assert (loaded.question_template, loaded.segment_len) == ("Q: {question}\nA:", 12)


def test_lora_weights_travel_with_the_adapter(tmp_path):
    model = tiny_llama(seed=0)
    mm = attach_memory(model, None, lora_rank=2, slots=4, attn_dim=32)
    make_reads_matter(mm)
    with torch.no_grad():
        for up in mm.lora.up.values():
            up.normal_(0, 0.5)
    segments = [random_ids(1, 10, seed=s) for s in range(2)]
    expected = _run(mm, segments)
    save_adapter(mm, tmp_path / "ad")
    assert read_adapter_config(tmp_path / "ad")["lora"]["rank"] == 2
    loaded = attach_memory(tiny_llama(seed=0), tmp_path / "ad")
    assert loaded.lora is not None
    assert torch.equal(_run(loaded, segments), expected)


def test_an_adapter_is_refused_by_another_base_model(tmp_path):
    save_adapter(tiny_with_memory(seed=0), tmp_path / "ad", base_name="tiny-0")
    with pytest.raises(L2MError) as err:
        attach_memory(tiny_llama(seed=1), tmp_path / "ad")
    message = str(err.value)
    assert "tiny-0" in message and "fingerprint" in message and "\n" not in message


@pytest.mark.parametrize("damage", ["missing", "no-json", "bad-json", "bad-weights", "wrong-shape"])
def test_a_broken_adapter_gives_one_clear_line(tmp_path, damage):
    directory = save_adapter(tiny_with_memory(seed=0), tmp_path / "ad")
    if damage == "missing":
        directory = tmp_path / "nowhere"
    elif damage == "no-json":
        (directory / CONFIG).unlink()
    elif damage == "bad-json":
        (directory / CONFIG).write_text("{not json")
    elif damage == "bad-weights":
        (directory / WEIGHTS).write_bytes(b"\x00" * 40)
    else:
        config = json.loads((directory / CONFIG).read_text())
        config["memory"]["slots"] = 6
        (directory / CONFIG).write_text(json.dumps(config))
    with pytest.raises(L2MError) as err:
        attach_memory(tiny_llama(seed=0), directory)
    assert "\n" not in str(err.value)
