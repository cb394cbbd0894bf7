"""Shared pieces of the LM2 tests: a tiny model with a memory whose reads actually change the output."""

from __future__ import annotations

import pytest
import torch

from l2m_core.lm2 import MemoryAugmentedModel, attach_memory
from l2m_core.lm2.attach import default_config
from l2m_core.tiny import byte_tokenizer, tiny_llama


def tiny_with_memory(seed: int = 0, slots: int = 4, **model_kwargs) -> MemoryAugmentedModel:
    model = tiny_llama(seed=seed, **model_kwargs)
    torch.manual_seed(seed)
    return attach_memory(model, default_config(model, slots=slots, attn_dim=32), tokenizer=byte_tokenizer())


def make_reads_matter(model: MemoryAugmentedModel, seed: int = 1) -> None:
    """Give the zero-initialised output projections random weights, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.memory.blocks.values():
            block.read_out.weight.copy_(torch.randn(block.read_out.weight.shape, generator=gen) * 0.5)


def random_ids(batch: int, length: int, seed: int, vocab: int = 200) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def one_thread():
    """One torch thread: on the shared 2-core CPU this is faster than two, and deterministic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
