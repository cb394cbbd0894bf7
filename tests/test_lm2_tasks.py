"""Tasks: the question sits alone in the last segment, the facts it needs segments before it."""

from __future__ import annotations

import pytest
import torch

from l2m_core.errors import L2MError
from l2m_core.tiny import byte_tokenizer
from l2m_core.training.lm2_tasks import IGNORE, BabiTask, KeyValueRecall, make_task
from tests.conftest import DATA

TOK = byte_tokenizer()


def _text(ids: torch.Tensor, mask: torch.Tensor) -> str:
    return TOK.decode(ids[mask].tolist())


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5])
def test_babi_episode_puts_the_question_alone_after_the_story(number):
    task = BabiTask(TOK, number, segment_len=96, max_segments=12)
    ep = task.episode(6, seed=0)
    batch, count, length = ep.input_ids.shape
    assert length == 96 and count >= 2
    for b in range(batch):
        last = _text(ep.input_ids[b, -1], ep.attention_mask[b, -1])
        assert last.startswith("Question: ") and "\nAnswer: " in last
        answer = TOK.decode(ep.labels[b, -1][ep.labels[b, -1] != IGNORE].tolist())
        assert last.endswith(answer) and answer.strip()
        assert (ep.labels[b, :-1] == IGNORE).all()  # nothing to predict before the question
        story = " ".join(_text(ep.input_ids[b, s], ep.attention_mask[b, s]) for s in range(count - 1))
        assert "?" not in story
        facts = ep.fact_ids[b]
        supporting = facts[ep.support[b]].unique()
        assert len(supporting) >= 1 and (supporting > 0).all()
        for f in supporting:  # a supporting fact is a whole story sentence, marked in full
            assert ep.support[b][facts == f].all()
            assert _text(ep.input_ids[b], facts == f).strip().endswith(".")
        if number == 1:  # "Where is Mary?": the supporting sentence moves Mary to the answer
            person = last.split("Where is ")[1].split("?")[0]
            sentence = _text(ep.input_ids[b], facts == supporting[0])
            assert person in sentence and answer.strip() in sentence


def test_babi_examples_with_fewer_segments_are_padded_in_front():
    task = BabiTask(TOK, 1, segment_len=40)
    ep = task.episode(16, seed=1)
    filled = ep.attention_mask.any(-1)  # (B, S): which segments hold tokens
    assert filled[:, -1].all()
    assert not filled.all()  # some short stories
    for row in filled:
        first = int(row.float().argmax())
        assert row[first:].all() and not row[:first].any()


def test_episodes_are_reproducible_per_seed_and_split():
    task = KeyValueRecall(TOK, segment_len=12, gap=2, facts=2)
    assert torch.equal(task.episode(4, seed=3).input_ids, task.episode(4, seed=3).input_ids)
    assert not torch.equal(task.episode(4, seed=3).input_ids, task.episode(4, seed=4).input_ids)
    assert not torch.equal(task.episode(4, seed=3).input_ids, task.episode(4, seed=3, split="test").input_ids)


def test_key_value_answer_is_the_value_stored_with_the_asked_key():
    task = KeyValueRecall(TOK, segment_len=12, gap=3, facts=3)
    ep = task.episode(20, seed=0)
    assert ep.input_ids.shape == (20, 5, 12)
    for b in range(20):
        facts = _text(ep.input_ids[b, 0], ep.attention_mask[b, 0])[:9].split()
        question = _text(ep.input_ids[b, -1], ep.attention_mask[b, -1])
        assert question[0] == "?" and len(question) == 3
        assert dict(facts)[question[1]] == question[2]
        assert _text(ep.input_ids[b, 0], ep.support[b, 0]) == question[1:]
        for s in range(1, 4):  # the gap: filler only, no keys or values
            gap = _text(ep.input_ids[b, s], ep.attention_mask[b, s])
            assert len(gap) == 12 and not set(gap) & set("abcdefgh0123456789")


def test_make_task_names_and_errors():
    assert make_task("kv", TOK).name == "kv"
    assert make_task("babi-qa3", TOK, 128).name == "babi-qa3"
    assert make_task("qa2", TOK, 128).name == "babi-qa2"
    with pytest.raises(L2MError, match="unknown task"):
        make_task("babi-qa9", TOK)
    with pytest.raises(L2MError, match="do not fit"):
        KeyValueRecall(TOK, segment_len=6, facts=4)
    with pytest.raises(L2MError, match="no bAbI file"):
        BabiTask(TOK, 1, data_dir=DATA / "nowhere")
