"""The memory module's contract: invisible at step 0, causal, per-layer, on the model's device and dtype."""

from __future__ import annotations

import pytest
import torch

from l2m_core.errors import L2MError
from l2m_core.lm2 import LM2Memory, MemoryConfig, attach_memory
from l2m_core.lm2.attach import MemoryAugmentedModel, default_config
from l2m_core.tiny import tiny_llama
from tests.lm2_helpers import make_reads_matter, one_thread, random_ids, tiny_with_memory  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_fresh_memory_leaves_the_base_logits_exactly_unchanged():
    mm = tiny_with_memory()
    first, second = random_ids(2, 12, seed=1), random_ids(2, 12, seed=2)
    with torch.no_grad():
        plain = [mm.model(input_ids=ids).logits for ids in (first, second)]
        out1 = mm.forward_segment(first, state=mm.initial_state(2))
        out2 = mm.forward_segment(second, state=out1.state)  # reads a bank that segment 1 wrote
    assert torch.equal(out1.logits, plain[0])
    assert torch.equal(out2.logits, plain[1])
    assert not torch.equal(out1.state[0], mm.initial_state(2)[0])  # the write did happen


def test_no_token_sees_a_later_token_of_its_own_segment_through_the_memory():
    mm = tiny_with_memory()
    make_reads_matter(mm)
    with torch.no_grad():
        state = mm.forward_segment(random_ids(1, 10, seed=3), state=mm.initial_state(1)).state
        segment = random_ids(1, 10, seed=4)
        changed = segment.clone()
        changed[0, 6:] = (changed[0, 6:] + 7) % 200 + 3
        a = mm.forward_segment(segment, state=state)
        b = mm.forward_segment(changed, state=state)
    assert torch.equal(a.logits[0, :6], b.logits[0, :6])
    assert not torch.allclose(a.logits[0, 6:], b.logits[0, 6:])
    assert not torch.equal(a.state[0], b.state[0])  # the later tokens reach the NEXT segment's memory


def test_an_earlier_segment_reaches_a_later_one_only_through_the_memory():
    mm = tiny_with_memory()
    make_reads_matter(mm)
    later = random_ids(1, 8, seed=5)
    with torch.no_grad():
        logits = [mm.forward_segment(later, state=mm.forward_segment(random_ids(1, 8, seed=s),
                                                                     state=mm.initial_state(1)).state).logits
                  for s in (6, 7)]
        without = [mm.forward_segment(later, state=None).logits for _ in range(2)]
    assert not torch.allclose(logits[0], logits[1])
    assert torch.equal(without[0], without[1])


def test_every_layer_has_its_own_parameters():
    memory = LM2Memory(MemoryConfig(hidden_size=32, num_layers=3, slots=4, heads=2, attn_dim=16))
    pointers = [{p.data_ptr() for p in block.parameters()} for block in memory.blocks.values()]
    assert len(pointers) == 3
    assert not (pointers[0] & pointers[1]) and not (pointers[1] & pointers[2])
    assert not torch.equal(memory.block(0).read_q.weight, memory.block(1).read_q.weight)


def test_the_memory_follows_the_models_dtype_and_device():
    model = tiny_llama(seed=0).to(torch.bfloat16)
    mm = attach_memory(model, default_config(model, slots=4, attn_dim=32))
    assert {p.dtype for p in mm.memory.parameters()} == {torch.bfloat16}
    assert {p.device for p in mm.memory.parameters()} == {next(model.parameters()).device}
    with torch.no_grad():
        out = mm.forward_segment(random_ids(1, 6, seed=1), state=mm.initial_state(1))
    assert out.logits.dtype == torch.bfloat16 and out.state[0].dtype == torch.bfloat16


def test_the_initial_bank_is_identity_like_slots():
    memory = LM2Memory(MemoryConfig(hidden_size=32, num_layers=1, slots=4, heads=2, attn_dim=16))
    assert torch.equal(memory.block(0).initial, torch.eye(4, 32))
    assert torch.allclose(memory.block(0).forget_gate.bias, torch.ones(32))


def test_a_segment_that_is_all_padding_leaves_the_memory_as_it_was():
    mm = tiny_with_memory()
    state = mm.initial_state(2)
    ids = random_ids(2, 6, seed=8)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = mm.forward_segment(ids, mask, state)
    assert torch.equal(out.state[0][1], state[0][1])
    assert not torch.equal(out.state[0][0], state[0][0])
    assert all(torch.isfinite(bank).all() for bank in out.state.values())


def test_padding_does_not_change_what_is_written():
    mm = tiny_with_memory()
    ids = random_ids(1, 5, seed=9)
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    with torch.no_grad():
        plain = mm.forward_segment(ids, state=mm.initial_state(1)).state
        masked = mm.forward_segment(padded, torch.tensor([[1] * 5 + [0] * 3]), mm.initial_state(1)).state
    assert all(torch.allclose(plain[i], masked[i], atol=1e-6) for i in plain)


def test_detach_gives_back_the_base_model_unchanged():
    model = tiny_llama(seed=0)
    ids = random_ids(1, 8, seed=10)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    keys = set(model.state_dict())
    mm = attach_memory(model, default_config(model, slots=4, attn_dim=32), lora_rank=2)
    assert set(model.state_dict()) == keys  # hooks, no module surgery: the base still saves as before
    make_reads_matter(mm)
    with torch.no_grad():
        assert not torch.allclose(mm.forward_segment(ids, state=mm.initial_state(1)).logits, before)
        assert torch.equal(mm.detach()(input_ids=ids).logits, before)


def test_fresh_lora_changes_nothing_until_trained():
    model = tiny_llama(seed=0)
    ids = random_ids(1, 8, seed=11)
    with torch.no_grad():
        before = model(input_ids=ids).logits
        mm = attach_memory(model, default_config(model, slots=4, attn_dim=32), lora_rank=4)
        assert torch.equal(mm.forward_segment(ids, state=None).logits, before)
        next(iter(mm.lora.up.values())).fill_(0.1)
        assert not torch.equal(mm.forward_segment(ids, state=None).logits, before)


def test_memory_shapes_are_checked():
    with pytest.raises(ValueError):
        MemoryConfig(hidden_size=32, num_layers=2, heads=3, attn_dim=16)
    with pytest.raises(ValueError):
        MemoryConfig(hidden_size=32, num_layers=2, layers=[5])
    model = tiny_llama(seed=0)
    other = LM2Memory(MemoryConfig(hidden_size=32, num_layers=2, slots=4, heads=2, attn_dim=16))
    with pytest.raises(L2MError, match="does not fit"):
        MemoryAugmentedModel(model, other)


def test_memory_on_chosen_layers_only():
    model = tiny_llama(seed=0, layers=3)
    mm = attach_memory(model, default_config(model, slots=4, attn_dim=32, layers=[2]))
    assert list(mm.initial_state(1)) == [2]
    with torch.no_grad():
        out = mm.forward_segment(random_ids(1, 5, seed=12), state=mm.initial_state(1))
    assert set(out.state) == {2} and set(out.reads) == {2}


def test_a_second_memory_on_the_same_model_is_refused_until_the_first_is_detached():
    model = tiny_llama(seed=0)
    first = attach_memory(model, default_config(model, slots=4, attn_dim=32))
    with pytest.raises(L2MError, match="already has a learned memory"):
        attach_memory(model, default_config(model, slots=4, attn_dim=32))
    first.detach()
    assert attach_memory(model, default_config(model, slots=4, attn_dim=32)).memory is not first.memory
