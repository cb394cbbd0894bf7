"""The sample data shared by training and the evaluations: bAbI files, insertions, the address head's samples."""

from __future__ import annotations

import random

import pytest
from conftest import DATA

from l2m_core.errors import L2MError
from l2m_core.tiny import byte_tokenizer
from l2m_core.training.data import Insertion, babi_file, insert, make_samples, read_babi, scatter


def test_read_babi_reads_stories_questions_and_support():
    questions = read_babi(next((DATA / "babi").glob("qa1_*_train.txt")))
    assert len(questions) == 1000
    first, second = questions[0], questions[1]
    assert first.story == ("Mary moved to the bathroom.", "John went to the hallway.")
    assert (first.question, first.answer, first.supporting) == ("Where is Mary?", "bathroom", (0,))
    assert second.story[-1] == "Sandra moved to the garden." and second.story[second.supporting[0]].startswith("Daniel")
    assert "?" not in "".join(s for q in questions for s in q.story)  # questions never leak into stories


def test_read_babi_rejects_a_malformed_file(tmp_path):
    bad = tmp_path / "qa1_bad_train.txt"
    bad.write_text("1 Mary moved to the bathroom.\nWhere is Mary?\tbathroom\t1\n")
    with pytest.raises(L2MError, match="not a bAbI line"):
        read_babi(bad)


def test_read_babi_splits_questions_and_maps_supporting_lines(tmp_path):
    path = tmp_path / "qa.txt"
    path.write_text("1 Mary went to the kitchen.\n2 John went to the garden.\n3 Where is Mary? \tkitchen\t1\n"
                    "4 Mary moved to the office.\n5 Where is Mary? \toffice\t4\n1 Sandra went home.\n"
                    "2 Where is Sandra? \thome\t1\n")
    stories = read_babi(path)
    assert [s.answer for s in stories] == ["kitchen", "office", "home"]
    assert stories[1].story == ("Mary went to the kitchen.", "John went to the garden.", "Mary moved to the office.")
    assert stories[1].supporting == (2,)
    assert stories[2].story == ("Sandra went home.",)


def test_insert_spaces_insertions_and_keeps_ties_in_order():
    text, starts = insert("One. Two.", [Insertion("B.", 4), Insertion("A.", 0), Insertion("C.", 4)])
    assert text == "A. One. B. C. Two."
    assert [text[s:s + 2] for s in starts] == ["B.", "A.", "C."]
    assert insert("", [Insertion("X.", 0), Insertion("Y.", 0)])[0] == "X. Y."


def test_a_missing_babi_task_is_one_clear_error():
    assert babi_file(DATA / "babi", "qa2", "test").name.startswith("qa2_")
    with pytest.raises(L2MError, match=r"no bAbI file qa9_\*_test.txt"):
        babi_file(DATA / "babi", "qa9", "test")


def test_scatter_puts_facts_in_order_between_sentences_and_spans_them():
    passage = "Mr. Bennet sat down. It rained all day. The end came."
    text, spans = scatter(passage, ["Fact one.", "Fact two."], random.Random(4))
    assert [text[a:b] for a, b in spans] == ["Fact one.", "Fact two."]
    assert spans[0][0] < spans[1][0]
    assert "Mr. Fact" not in text  # "Mr." ends no sentence
    assert text.replace("Fact one. ", "").replace("Fact two. ", "") == passage


def test_needle_samples_hold_their_support_and_differ_between_splits():
    tok = byte_tokenizer()
    train = make_samples("train", 4, tok, 64, seed=1, data=DATA)
    test = make_samples("test", 4, tok, 64, seed=1, data=DATA)
    assert [s.family for s in train] == ["passkey"] * 4 + ["babi"] * 4
    for sample in train + test:
        assert sample.support and all(sample.document[a:b].endswith(".") for a, b in sample.support)
    assert {s.question for s in train}.isdisjoint(s.question for s in test if s.family == "passkey")
