"""Scoring rules: BABILong's `compare_answers`, the passkey match and RULER's `string_match_all`."""

from __future__ import annotations

import pytest
from conftest import DATA

from agent.evals.generators import BabilongGenerator, NiahGenerator, PasskeyGenerator
from agent.evals.scoring import babilong_correct, passkey_score, score, string_match_all
from l2m_core.tiny import byte_tokenizer

ROOMS = ["bathroom", "bedroom", "garden", "hallway", "kitchen", "office"]


@pytest.mark.parametrize("output, target, question, right", [
    ("The most recent location of Mary is kitchen.", "kitchen", "Where is Mary?", True),
    ("The most recent location of Mary is Kitchen", "kitchen", "Where is Mary?", True),
    ("Mary is in the kitchen or the garden.", "kitchen", "Where is Mary?", False),   # two labels named
    ("The answer is garden. Earlier she was in the kitchen.", "garden", "Where is Mary?", True),  # first sentence
    ("The answer is garden. Earlier she was in the kitchen.", "kitchen", "Where is Mary?", False),
    ("Before the kitchen the apple was in the bathroom.", "bathroom", "Where was the apple before the kitchen?",
     True),                                                                         # labels in the question ignored
    ("Before the kitchen the apple was in the kitchen.", "kitchen", "Where was the apple before the kitchen?", False),
    ("<example>\nAlan went to the office", "office", "Where is Alan?", False),      # cut at a new example
    ("I do not know", "office", "Where is Alan?", False),
])
def test_babilong_rule(output, target, question, right):
    assert babilong_correct(target, output, question, ROOMS) is right


@pytest.mark.parametrize("output, value", [
    ("The pass key is 12345.", 1.0), ("12345", 1.0), (" is 12345 remember", 1.0),
    ("The pass key is 123456.", 0.0), ("1234", 0.0), ("", 0.0)])
def test_passkey_number_must_appear_whole(output, value):
    assert passkey_score(["12345"], output) == value


def test_ruler_string_match_all_is_the_fraction_found_case_insensitively():
    assert string_match_all(["1111111", "2222222"], "are 1111111 and 3333333") == 0.5
    assert string_match_all(["abc-def"], "ABC-DEF") == 1.0
    assert string_match_all(["1", "2", "3", "4"], "nothing") == 0.0


def test_score_dispatches_on_the_samples_task():
    tok = byte_tokenizer()
    passkey = PasskeyGenerator(tok, DATA).samples("passkey", 300, 1)[0]
    assert score(passkey, f"The pass key is {passkey.answers[0]}.") == 1.0
    babi = BabilongGenerator(tok, DATA).samples("qa1", 0, 1)[0]
    assert score(babi, f"The most recent location is {babi.answers[0]}.") == 1.0
    assert score(babi, "The most recent location is nowhere.") == 0.0
    multi = NiahGenerator(tok, DATA).samples("multivalue", 500, 1)[0]
    assert score(multi, " ".join(multi.answers[:3])) == 0.75
