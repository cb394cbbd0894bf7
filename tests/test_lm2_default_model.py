"""The learned memory on the real default model (SmolLM2-135M): invisible until trained, causal, detachable."""

from __future__ import annotations

import pytest
import torch

from l2m_core.errors import L2MError
from l2m_core.lm2 import attach_memory, save_adapter
from tests.lm2_helpers import make_reads_matter, one_thread, tiny_with_memory  # noqa: F401 (fixture)

pytestmark = [pytest.mark.model, pytest.mark.usefixtures("one_thread")]


@pytest.fixture
def memory_on_default(default_model):
    torch.manual_seed(0)
    mm = attach_memory(default_model.model, None, default_model.tokenizer)
    yield mm
    mm.detach()  # the model is shared by the session: leave it as it was


def test_a_fresh_memory_leaves_the_default_models_logits_unchanged(memory_on_default, default_model):
    mm, tok = memory_on_default, default_model.tokenizer
    facts = tok("Mary moved to the bathroom. John went to the hallway.", return_tensors="pt").input_ids
    question = tok("Question: Where is Mary?\nAnswer:", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = mm.model(input_ids=question).logits
        state = mm.forward_segment(facts, state=mm.initial_state(1)).state
        assert torch.equal(mm.forward_segment(question, state=state).logits, plain)
        make_reads_matter(mm)
        changed = mm.forward_segment(question, state=state).logits
        assert not torch.allclose(changed, plain)
        assert torch.isfinite(changed).all()
        longer = torch.cat([question, tok(" the garden", return_tensors="pt").input_ids], dim=1)
        prefix = mm.forward_segment(longer, state=state).logits[:, :question.shape[1]]
        assert torch.allclose(prefix, changed, atol=1e-4)  # later tokens of the segment change nothing before them
    assert isinstance(mm.answer("Mary moved to the bathroom.", "Where is Mary?", segment_len=16, max_new_tokens=3),
                      str)


def test_an_adapter_from_another_model_is_refused(tmp_path, default_model):
    save_adapter(tiny_with_memory(seed=0), tmp_path / "tiny-adapter", base_name="tiny")
    with pytest.raises(L2MError, match="trained on model tiny"):
        attach_memory(default_model.model, tmp_path / "tiny-adapter")
    assert not default_model.model.model.layers[0]._forward_hooks  # nothing was left attached
