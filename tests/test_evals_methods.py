"""The compared methods on a tiny model: prompts, windows, retrieval, prefix reuse, and the l2m plumbing."""

from __future__ import annotations

import pytest
from conftest import DATA
from evals_helpers import CALLS, FakeMemory

from agent.evals.generators import PasskeyGenerator
from agent.evals.methods import L2M, Full, Method, MethodOptions, Rag, Reply, Skip, Truncate, make_method
from agent.evals.stores import patch, split_parts
from l2m_core.errors import L2MError
from l2m_core.loading import load_model
from l2m_core.tiny import byte_tokenizer, save_tiny_model

WINDOW = 1024


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_model(save_tiny_model(tmp_path_factory.mktemp("tiny"), max_positions=WINDOW), device="cpu")


@pytest.fixture(scope="module")
def long_samples(lm):
    """Passkeys at depths 10%..90% of 2,000 tokens: twice the tiny model's window."""
    return PasskeyGenerator(lm.tokenizer, DATA, seed=0).samples("passkey", 2000, 5)


def test_full_answers_inside_the_window_and_skips_beyond_it(lm, long_samples):
    short = PasskeyGenerator(lm.tokenizer, DATA).samples("passkey", 300, 1)[0]
    full = Full(lm)
    inside = full.answer(short)
    assert inside.status == "ok" and inside.visible == 1.0 and inside.prompt_tokens < WINDOW
    beyond = full.answer(long_samples[0])
    assert beyond.status == "skipped" and beyond.note.startswith("exceeds window")


def test_truncate_keeps_the_last_tokens_that_fit(lm, long_samples):
    truncate = Truncate(lm)
    visible = []
    for sample in long_samples:
        context, seen = truncate._context(sample)
        assert sample.context.endswith(context) and len(context) < len(sample.context)
        assert len(truncate.prompt_ids(sample, context)) + sample.max_new_tokens <= WINDOW
        visible.append(seen)
        prediction = truncate.answer(sample)
        assert prediction.status == "ok" and prediction.prompt_tokens <= WINDOW
    # The window holds the last ~650 of 2,000 tokens: needles at 70% and 90% are in it.
    assert visible == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_rag_retrieves_the_needles_chunk(lm, long_samples):
    rag = Rag(lm, MethodOptions(top_k=2, chunk_tokens=128))
    for sample in long_samples:
        context, seen = rag._context(sample)
        assert sample.answers[0] in context  # BM25 found the needle's words
        assert seen == float(sample.insertions[0].text in context)
        assert len(lm.tokenizer(context).input_ids) <= 2 * 128 + 8


def test_a_failing_method_reports_an_error_not_an_exception(lm, long_samples):
    class Broken(Method):
        name = "broken"

        def _answer(self, sample):
            raise RuntimeError("boom\nsecond line")

    class Declines(Method):
        name = "declines"

        def _answer(self, sample):
            raise Skip("not for me")

    class Works(Method):
        name = "works"

        def _answer(self, sample):
            return Reply("42", prompt_tokens=7, visible=0.5)

    broken = Broken(lm).answer(long_samples[0])
    assert (broken.status, broken.note, broken.text) == ("error", "RuntimeError: boom", "")
    assert Declines(lm).answer(long_samples[0]).status == "skipped"
    works = Works(lm).answer(long_samples[0])
    assert (works.status, works.text, works.prompt_tokens, works.visible) == ("ok", "42", 7, 0.5)
    assert works.seconds >= 0


def test_unknown_method_is_a_user_error(lm):
    with pytest.raises(L2MError, match="unknown method"):
        make_method("oracle", lm)


def test_parts_cover_the_haystack_and_are_stable_under_longer_prefixes():
    tok = byte_tokenizer()
    text = "".join(f"line {i} of the haystack.\n" for i in range(400))
    starts = list(range(len(text)))  # byte tokenizer: one token per character
    spans = split_parts(text, starts, 500)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(text[e - 1] == "\n" and 500 <= e - b <= 530 for b, e in spans[:-1])
    shorter = split_parts(text[:4000], starts[:4000], 500)
    assert shorter[:-1] == spans[:len(shorter) - 1]
    assert split_parts("", [], 500) == [(0, 0)]
    assert len(tok(text).input_ids) == len(text)


def test_patched_parts_rebuild_the_context(lm, long_samples):
    for sample in long_samples:
        encoded = lm.tokenizer(sample.haystack, add_special_tokens=False, return_offsets_mapping=True)
        spans = split_parts(sample.haystack, [s for s, _ in encoded["offset_mapping"]], 300)
        patched = patch(sample.haystack, spans, sample.insertions)
        assert "".join(patched.documents.values()) == sample.context
        ((source, offset),) = patched.locations
        assert patched.documents[source][offset:].startswith(sample.insertions[0].text)
        changed = [s for s, text in patched.documents.items() if text != sample.haystack[slice(*spans[int(s[-3:])])]]
        assert changed == [source]


def test_l2m_builds_a_base_store_once_and_patches_one_part_per_sample(lm, long_samples, tmp_path):
    CALLS.clear()
    options = MethodOptions(part_tokens=300, store_root=tmp_path, memory_api=FakeMemory)
    method = L2M(lm, options)
    predictions = [method.answer(s) for s in long_samples]
    method.close()
    assert [p.status for p in predictions] == ["ok"] * 5
    assert [p.text for p in predictions] == [f"The pass key is {s.answers[0]}." for s in long_samples]
    assert all(p.visible == 0.5 and p.detail["lexical"] == 1.0 for p in predictions)  # one of two layers read it
    kinds = [c[0] for c in CALLS]
    parts = len(split_parts(long_samples[0].haystack, list(range(len(long_samples[0].haystack))), 300))
    assert kinds[:1 + parts] == ["create"] + ["ingest"] * parts   # the base store, once
    assert kinds.count("fork") == 5
    assert kinds[1 + parts:].count("ingest") == 5 and kinds.count("retire") == 5  # one part per sample
    assert method.setup_seconds > 0
    assert not list(tmp_path.glob("fork-*"))  # forks are removed

    CALLS.clear()
    again = L2M(lm, options)
    again.answer(long_samples[0])
    again.close()
    assert [c[0] for c in CALLS][:2] == ["open", "fork"]  # a later run reuses the stored base


def test_l2m_reuses_the_parts_a_longer_haystack_shares(lm, tmp_path):
    options = MethodOptions(part_tokens=300, store_root=tmp_path, memory_api=FakeMemory)
    gen = PasskeyGenerator(lm.tokenizer, DATA, seed=0)
    shorter, longer = gen.samples("passkey", 1200, 1)[0].haystack, gen.samples("passkey", 2400, 1)[0]
    method = L2M(lm, options)
    method.answer(gen.samples("passkey", 1200, 1)[0])
    CALLS.clear()
    method.answer(longer)
    method.close()

    def parts(text):  # byte tokenizer: token starts are character offsets
        return [text[b:e] for b, e in split_parts(text, list(range(len(text))), 300)]
    new_parts, old_parts = parts(longer.haystack), parts(shorter)
    shared = sum(a == b for a, b in zip(new_parts, old_parts, strict=False))
    assert 0 < shared < len(new_parts)
    kinds = [c[0] for c in CALLS]
    assert kinds[:4] == ["close", "open", "fork", "close"]  # previous base closed; the closest base forked
    base_build = kinds[4:kinds.index("fork", 4)]
    assert base_build.count("ingest") == len(new_parts) - shared


def test_a_needle_straddling_two_blocks_counts_half_read_when_one_is(tmp_path):
    from agent.evals.methods import _mean_read, _needle_blocks

    memory = FakeMemory.create(tmp_path / "store", None)
    memory.ingest_document("x" * 300, source="doc")
    straddling = _needle_blocks(memory, "doc", 50, 40)   # characters 50..89: blocks 0 and 1
    inside = _needle_blocks(memory, "doc", 130, 20)      # characters 130..149: block 2
    assert straddling == [0, 1] and inside == [2]
    assert _mean_read([straddling, inside], {1, 2}) == 0.75
    assert _mean_read([straddling], set()) == 0.0


def test_l2m_gives_the_answer_prefix_to_engines_that_take_it(lm, long_samples, tmp_path):
    class PrefixMemory(FakeMemory):
        def ask(self, question, instruction=None, max_new_tokens=32, hops=1, answer_prefix=""):
            CALLS.append(("prefix", answer_prefix))
            return super().ask(question, instruction, max_new_tokens, hops)

    sample = long_samples[0]
    for api, question, prefix in [(FakeMemory, sample.question, None),
                                  (PrefixMemory, sample.question, sample.answer_prefix)]:
        CALLS.clear()
        method = L2M(lm, MethodOptions(part_tokens=300, store_root=tmp_path / api.__name__, memory_api=api))
        method.answer(sample)
        method.close()
        assert ("ask", question, sample.instruction) in CALLS
        assert (("prefix", prefix) in CALLS) == (prefix is not None)


def test_l2m_without_the_engine_says_how_to_go_on(lm, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_engine(name, *args, **kwargs):
        if name == "l2m_core.memory":
            raise ImportError("No module named 'l2m_core.memory'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_engine)
    with pytest.raises(L2MError, match="leave l2m out of --methods"):
        L2M(lm)


def test_l2m_on_the_real_engine_with_a_tiny_model(lm, long_samples, tmp_path):
    """The engine's interface as the method uses it (tiny random model: mechanics, not accuracy)."""
    method = L2M(lm, MethodOptions(part_tokens=512, store_root=tmp_path))
    prediction = method.answer(long_samples[4])
    method.close()
    assert prediction.status == "ok", prediction.note
    assert 0.0 <= prediction.visible <= 1.0 and prediction.detail["lexical"] in (0.0, 1.0)
    assert prediction.detail["read_blocks"] > 0


@pytest.mark.model
def test_baselines_answer_a_passkey_without_haystack_on_the_default_model(default_model):
    samples = PasskeyGenerator(default_model.tokenizer, DATA, seed=0).samples("passkey", 0, 2)
    for method in (Full(default_model), Rag(default_model)):
        for sample in samples:
            prediction = method.answer(sample)
            assert prediction.status == "ok" and sample.answers[0] in prediction.text, prediction.text


@pytest.mark.model
def test_l2m_reads_a_passkey_beyond_the_prompt_on_the_default_model(default_model, tmp_path):
    sample = PasskeyGenerator(default_model.tokenizer, DATA, seed=0).samples("passkey", 1000, 1)[0]
    method = L2M(default_model, MethodOptions(store_root=tmp_path))
    prediction = method.answer(sample)
    method.close()
    assert prediction.status == "ok", prediction.note
    assert prediction.detail["lexical"] == 1.0 and sample.answers[0] in prediction.text, prediction.text
