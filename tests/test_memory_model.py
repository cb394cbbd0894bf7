"""Beyond-window recall on the real default model: a pass key hidden in a novel, 16K tokens (twice the
model's native window), read from memory; the same model with the same window and no memory as control."""

from __future__ import annotations

import random

import pytest
import torch

from l2m_core.memory import Memory
from tests.conftest import DATA

pytestmark = pytest.mark.model

LENGTH, PARTS, DEPTHS = 16_384, 8, [0.1, 0.19, 0.28, 0.37, 0.46, 0.54, 0.63, 0.72, 0.81, 0.9]
QUESTION = "What is the pass key?"


def _needle(key: int) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key."


@pytest.fixture(scope="module")
def haystack_store(default_model, tmp_path_factory):
    tok = default_model.tokenizer
    ids = tok((DATA / "haystack" / "pride.txt").read_text(), add_special_tokens=False)["input_ids"][:LENGTH]
    size = LENGTH // PARTS
    parts = [tok.decode(ids[i * size:(i + 1) * size]) for i in range(PARTS)]
    mem = Memory.create(tmp_path_factory.mktemp("haystack") / "base", default_model)
    for i, part in enumerate(parts):
        mem.ingest_document(part, f"pride/part-{i}")
    return mem, parts


def _insert(text: str, fraction: float, needle: str) -> tuple[str, int]:
    """The needle as a paragraph of its own at the first paragraph break after `fraction` of the text
    (inside a character's quoted speech this 135M model reads a pass key as dialogue, even with plain
    attention over a few hundred tokens)."""
    at = text.find("\n\n", int(len(text) * fraction))
    at = len(text) if at < 0 else at + 1
    return text[:at] + "\n" + needle + "\n" + text[at:], at + 1


def _no_memory_answer(lm, context: str) -> str:
    prompt = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Answer the question using the context. Answer briefly.\n\n"
                                     f"Context:\n{context}\n\nQuestion: {QUESTION}"}],
        add_generation_prompt=True, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = lm.model.generate(prompt, max_new_tokens=16, do_sample=False)
    return lm.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)


def test_passkey_16k_in_novel_text(haystack_store, default_model, tmp_path):
    base, parts = haystack_store
    rng = random.Random(7)
    window = base.settings.max_read_blocks * base.settings.block_size
    tok = default_model.tokenizer
    with_memory = without_memory = addressed = 0
    for n, depth in enumerate(DEPTHS):
        key = rng.randint(10_000, 99_999)
        part = min(int(depth * PARTS), PARTS - 1)
        text, at = _insert(parts[part], depth * PARTS - part, _needle(key))
        mem = base.fork(tmp_path / f"sample-{n}")
        mem.ingest_document(text, f"pride/part-{part}")
        answer = mem.ask(QUESTION, max_new_tokens=16)
        needle_block = mem.block_at(f"pride/part-{part}", at + 5)
        addressed += all(needle_block in ids for ids in answer.read_set.values())
        with_memory += str(key) in answer.text
        full = "".join(parts[:part]) + text + "".join(parts[part + 1:])
        tail = tok.decode(tok(full, add_special_tokens=False)["input_ids"][-window:])
        without_memory += str(key) in _no_memory_answer(default_model, tail)
        mem.close()
    print(f"passkey 16K: with memory {with_memory}/10, addressing recall {addressed}/10, "
          f"same window without memory {without_memory}/10")
    assert with_memory >= 9  # the bar; measured 9/10 (the miss had its needle in the read set)
    assert addressed >= 9
    assert without_memory <= 2
