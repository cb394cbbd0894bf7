"""The eval generators: determinism by seed, placement at depth and in order, lengths, the data they read."""

from __future__ import annotations

import pytest
from conftest import DATA

from agent.evals.generators import BabilongGenerator, NiahGenerator, PasskeyGenerator
from l2m_core.errors import L2MError
from l2m_core.tiny import byte_tokenizer
from l2m_core.training.data import data_dir, read_babi


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


@pytest.mark.parametrize("cls, variant", [(PasskeyGenerator, "passkey"), (BabilongGenerator, "qa2"),
                                          (NiahGenerator, "multikey")])
def test_same_seed_same_samples_other_seed_other_samples(tok, cls, variant):
    one = cls(tok, DATA, seed=3).samples(variant, 1500, 3)
    again = cls(tok, DATA, seed=3).samples(variant, 1500, 3)
    other = cls(tok, DATA, seed=4).samples(variant, 1500, 3)
    assert [(s.context, s.question, s.answers) for s in one] == [(s.context, s.question, s.answers) for s in again]
    assert [s.context for s in one] != [s.context for s in other]


def test_a_sample_asks_the_same_question_at_every_length(tok):
    gen = BabilongGenerator(tok, DATA, seed=1)
    short, long = gen.samples("qa1", 0, 4), gen.samples("qa1", 3000, 4)
    assert [(s.question, s.answers, [i.text for i in s.insertions]) for s in short] == \
           [(s.question, s.answers, [i.text for i in s.insertions]) for s in long]


@pytest.mark.parametrize("length", [2000, 6000])
def test_passkey_lands_at_the_requested_depths(tok, length):
    samples = PasskeyGenerator(tok, DATA, seed=0).samples("passkey", length, 5)
    for want, sample in zip([0.1, 0.3, 0.5, 0.7, 0.9], samples, strict=True):
        (offset,) = sample.offsets
        needle = sample.insertions[0].text
        assert sample.context[offset:offset + len(needle)] == needle
        measured = _tokens(tok, sample.context[:offset]) / _tokens(tok, sample.context)
        assert measured == pytest.approx(want, abs=0.03)
        assert sample.depths[0] == pytest.approx(measured, abs=0.005)
        assert sample.answers[0] in needle


def test_explicit_depths_cycle_over_samples(tok):
    samples = NiahGenerator(tok, DATA, seed=0, depths=[0.25, 0.75]).samples("single", 4000, 4)
    assert [s.depths[0] for s in samples] == pytest.approx([0.25, 0.75, 0.25, 0.75], abs=0.03)


@pytest.mark.parametrize("length", [1000, 4000, 9000])
def test_context_length_is_near_the_target_and_counted_exactly(tok, length):
    for sample in NiahGenerator(tok, DATA, seed=0).samples("multivalue", length, 2):
        assert sample.context_tokens == _tokens(tok, sample.context)
        assert length * 0.97 <= sample.context_tokens <= length


def test_babilong_facts_are_scattered_in_story_order(tok):
    story_facts = None
    for sample in BabilongGenerator(tok, DATA, seed=2).samples("qa3", 4000, 3):
        assert sample.offsets == sorted(sample.offsets)
        assert len(set(sample.offsets)) > 1
        for ins, offset in zip(sample.insertions, sample.offsets, strict=True):
            assert sample.context[offset:offset + len(ins.text)] == ins.text
        spread = sample.depths[-1] - sample.depths[0]
        assert spread > 0.3  # scattered through the haystack, not bunched together
        story_facts = [i.text for i in sample.insertions]
    assert story_facts and all(f.endswith(".") for f in story_facts)


def test_babilong_sample_comes_from_bAbI_with_BABILong_prompts(tok):
    sample = BabilongGenerator(tok, DATA, seed=0).samples("qa2", 0, 1)[0]
    stories = read_babi(DATA / "babi" / "qa2_two-supporting-facts_test.txt")
    story = next(s for s in stories if list(s.story) == [i.text for i in sample.insertions]
                 and s.question == sample.question)
    assert sample.answers == [story.answer]
    assert [i for i, ins in enumerate(sample.insertions) if ins.key] == sorted(story.supporting)
    assert sample.context == " ".join(story.story)  # 0K: the facts alone
    prompt = sample.prompt()
    assert prompt.startswith("I give you context with the facts about locations and actions")
    assert "<example>" in prompt and f"<context>\n{sample.context}\n</context>\n\nQuestion: {sample.question}" in prompt
    assert "kitchen" in sample.labels and "bathroom" in sample.labels


@pytest.mark.parametrize("variant, needles, answers, singular", [
    ("single", 1, 1, True), ("multikey", 4, 1, True), ("multivalue", 4, 4, False), ("multiquery", 4, 4, False)])
def test_niah_variants_follow_ruler(tok, variant, needles, answers, singular):
    sample = NiahGenerator(tok, DATA, seed=5).samples(variant, 3000, 1)[0]
    assert len(sample.insertions) == needles and len(sample.answers) == answers
    assert sum(i.key for i in sample.insertions) == answers
    for ins in sample.insertions:
        assert ins.text.startswith("One of the special magic numbers for ") and ins.text in sample.context
    assert all(a in sample.context for a in sample.answers)
    keys = {i.text.split(" for ")[1].split(" is:")[0] for i in sample.insertions}
    assert len(keys) == (1 if variant in ("single", "multivalue") else 4)
    if singular:
        assert sample.instruction.startswith("A special magic number is hidden")
        assert sample.question.startswith("What is the special magic number for ")
        assert sample.answer_prefix.endswith("mentioned in the provided text is")
    else:
        assert sample.question.startswith("What are all the special magic numbers for ")
    if variant == "multiquery":
        assert sample.question.count(", ") == 3 and ", and " in sample.question


def test_noise_and_novel_haystacks(tok):
    noise = PasskeyGenerator(tok, DATA, haystack="noise").samples("passkey", 800, 1)[0]
    novel = PasskeyGenerator(tok, DATA, haystack="novel").samples("passkey", 800, 1)[0]
    assert noise.haystack.startswith("The grass is green. The sky is blue.")
    assert novel.haystack.startswith("Pride and Prejudice")


def test_long_haystacks_repeat_the_corpus_past_its_end(tok, tmp_path):
    (tmp_path / "haystack").mkdir()
    for name in ("pride.txt", "sense.txt"):
        (tmp_path / "haystack" / name).write_text(f"Book {name}. It was a fine day.\n\n"
                                                  "============\n(See notice at gutenberg.txt)\n")
    sample = PasskeyGenerator(tok, tmp_path, haystack="novel").samples("passkey", 600, 1)[0]
    assert sample.context_tokens > 550
    assert sample.haystack.count("Book pride.txt. It was a fine day.") > 5
    assert "gutenberg" not in sample.haystack  # the licence trailers are cut


def test_user_errors_are_one_line(tok, tmp_path):
    with pytest.raises(L2MError, match="unknown niah variant"):
        NiahGenerator(tok, DATA).samples("double", 100, 1)
    with pytest.raises(L2MError, match="data folder not found"):
        data_dir(tmp_path / "nowhere")
    with pytest.raises(L2MError, match="unknown haystack"):
        PasskeyGenerator(tok, DATA, haystack="essay").samples("passkey", 500, 1)


@pytest.mark.model
def test_lengths_and_depths_with_the_default_models_tokenizer(default_model):
    tokenizer = default_model.tokenizer
    for sample in PasskeyGenerator(tokenizer, DATA, haystack="novel").samples("passkey", 8192, 3):
        real = _tokens(tokenizer, sample.context)
        assert sample.context_tokens == pytest.approx(real, abs=3)
        assert 8192 * 0.98 <= real <= 8192
        before = _tokens(tokenizer, sample.context[:sample.offsets[0]])
        assert sample.depths[0] == pytest.approx(before / real, abs=0.002)
