"""The learned memory recalls what lies segments back, beyond the attention window; the same model and
training budget without the memory stays at chance.

The task: two `key value` facts in the first segment, two segments of filler, then a segment holding only
the question `?key`; each segment is a separate forward pass, so only the memory links them. A tiny Llama
is trained from scratch (end to end) on CPU in about 300 small steps.
"""

from __future__ import annotations

import pytest
import torch

from l2m_core.lm2 import attach_memory
from l2m_core.lm2.attach import default_config
from l2m_core.tiny import byte_tokenizer, tiny_llama
from l2m_core.training.lm2_tasks import IGNORE, KeyValueRecall
from l2m_core.training.lm2_trainer import TrainConfig, Trainer
from tests.lm2_helpers import one_thread  # noqa: F401 (fixture)

STEPS, BATCH, EVAL = 300, 64, 256


def _train(use_memory: bool):
    tokenizer = byte_tokenizer()
    model = tiny_llama(seed=0, layers=2, hidden=64, heads=4, kv_heads=2, max_positions=64)
    torch.manual_seed(0)
    memory = attach_memory(model, default_config(model, slots=8, heads=4, attn_dim=64), tokenizer)
    task = KeyValueRecall(tokenizer, segment_len=12, gap=2, facts=2)
    memory.question_template, memory.segment_len = task.question_template, task.segment_len
    config = TrainConfig(steps=STEPS, batch_size=BATCH, lr=6e-3, warmup=20, aux_weight=1.0, use_memory=use_memory,
                         end_to_end=True, eval_every=0, eval_examples=EVAL, seed=0)
    trainer = Trainer(memory, task, config)
    return trainer, trainer.train()["accuracy"]


@pytest.mark.usefixtures("one_thread")
def test_memory_recalls_facts_from_segments_back_and_the_same_model_without_it_cannot():
    trainer, with_memory = _train(use_memory=True)
    _, without_memory = _train(use_memory=False)
    chance = trainer.task.chance
    assert with_memory >= 0.9, f"with memory: {with_memory:.3f}"
    assert 0.3 * chance <= without_memory <= 2.5 * chance, f"without memory: {without_memory:.3f}"

    # the plain API: read the text into memory segment by segment, then answer the question from memory
    model, tokenizer = trainer.model, trainer.model.tokenizer
    episode = trainer.task.episode(24, seed=7, split="test")
    right = 0
    for b in range(24):
        segments = episode.input_ids[b, :-1].flatten().tolist()
        question = episode.input_ids[b, -1, 1:2].tolist()
        expected = episode.labels[b, -1][episode.labels[b, -1] != IGNORE].tolist()
        right += model.answer(tokenizer.decode(segments), tokenizer.decode(question), max_new_tokens=1) == \
            tokenizer.decode(expected)
    assert right >= 20, f"answer(): {right}/24"
