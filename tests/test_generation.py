"""One greedy loop and one stop set for the memory engine, the plain model (baselines) and LM2; the engine's
attention without a plan is the plain model; the plain decoder reuses a cached prefix exactly."""

from __future__ import annotations

import pytest
import torch

import l2m_core.attention  # noqa: F401  (registers the engine's "l2m" attention)
from l2m_core.generation import GreedyDecoder, PrefixCache, generate, generate_batch, greedy, stop_ids
from l2m_core.loading import load_model
from l2m_core.memory import MEMORY_SLOT, Memory, prompt_text, reading_head
from l2m_core.settings import MemorySettings
from l2m_core.tiny import byte_tokenizer, save_tiny_model, tiny_model

QUESTION = "Which lamp glows?"


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_model(save_tiny_model(tmp_path_factory.mktemp("tiny"), max_positions=1024), device="cpu")


def _recording(chosen: list[int], logits_seen: list[torch.Tensor], force_at: dict[int, int] | None = None):
    """A token chooser that takes the argmax (or, at step i, `force_at[i]`) and records what it saw."""
    def choose(logits: torch.Tensor) -> int:
        logits_seen.append(logits.float().clone())
        token = (force_at or {}).get(len(chosen), int(logits.argmax()))
        chosen.append(token)
        return token
    return choose


@pytest.mark.parametrize("force_stop", [False, True], ids=["token-limit", "end-of-turn"])
def test_an_empty_memory_replies_and_stops_like_the_plain_model(lm, tmp_path, force_stop):
    """The same prompt (reading head, then the question's turn) through `Memory.ask` on an empty store and
    through the plain model's decoder: the same logits at every step, the same tokens, the same stop."""
    end_of_turn = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    force = {3: end_of_turn} if force_stop else None
    settings = MemorySettings(block_size=16, chunk_size=32, contiguous=True, attention_top_k=0, codec="fp32")
    mem_chosen, mem_logits = [], []
    with Memory.create(tmp_path / "s", lm, settings) as mem:
        text = mem.ask(QUESTION, instruction="Reply in one word.", max_new_tokens=8,
                       choose_token=_recording(mem_chosen, mem_logits, force)).text
    tokenizer = lm.tokenizer
    tail = prompt_text(tokenizer, QUESTION, "Reply in one word.").split(MEMORY_SLOT)[1]
    ids = (tokenizer(reading_head(tokenizer), add_special_tokens=False)["input_ids"]
           + tokenizer(tail, add_special_tokens=False)["input_ids"])
    plain_chosen, plain_logits = [], []
    lm.model.set_attn_implementation("sdpa")  # the plain model, as a baseline sees it
    try:
        reply = generate(PrefixCache(lm.model), ids, stop_ids(tokenizer, lm.model), 8,
                         _recording(plain_chosen, plain_logits, force))
    finally:
        lm.model.set_attn_implementation("l2m")
    assert mem_chosen == plain_chosen
    for ours, plain in zip(mem_logits, plain_logits, strict=True):
        assert torch.allclose(ours, plain, atol=1e-4), (ours - plain).abs().max()
    assert text == tokenizer.decode(reply.tokens, skip_special_tokens=True).strip()
    assert reply.stop == (end_of_turn if force_stop else None)
    assert len(reply.tokens) == (3 if force_stop else 8)


def test_a_chat_reply_ends_at_the_end_of_turn_even_where_eos_is_another_token():
    """A base tokenizer's eos ("<|endoftext|>") does not end a chat turn: "<|im_end|>" must stop it too
    (the baselines' old stop set, eos only, decoded past it while the engine stopped)."""
    tokenizer = byte_tokenizer()
    tokenizer.eos_token = "<|endoftext|>"
    model = tiny_model("llama")
    model.generation_config.eos_token_id = 0
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_ids(tokenizer, model) == {0, end_of_turn}
    assert stop_ids(None, model) == {0}  # prompts given as ids: the model's eos alone


def test_greedy_stops_at_a_stop_token_or_the_limit_and_never_feeds_the_last_token():
    fed: list[int] = []
    script = iter([5, 6, 7, 9, 8])

    def logits_for(token: int) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(token), 10).float()

    def feed(token: int) -> torch.Tensor:
        fed.append(token)
        return logits_for(next(script))

    stopped = greedy(logits_for(4), feed, {9}, max_new_tokens=10)
    assert (stopped.tokens, stopped.stop, fed) == ([4, 5, 6, 7], 9, [4, 5, 6, 7])
    fed.clear()
    script = iter([5, 6, 7])
    cut = greedy(logits_for(4), feed, {9}, max_new_tokens=3)
    assert (cut.tokens, cut.stop, fed) == ([4, 5, 6], None, [4, 5])
    assert greedy(logits_for(9), feed, {9}, max_new_tokens=3).tokens == []


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma2"])
def test_the_engine_attention_without_a_plan_is_the_plain_model_against_a_cache(family):
    """With the engine's attention set and no plan active, a suffix prefilled against a cached prefix and
    tokens fed one by one give the logits of one plain pass over everything (sliding windows and
    soft-capping included): the baselines need no switch back to SDPA."""
    model = tiny_model(family, seed=3)
    ids = [5 + (i * 7) % 200 for i in range(90)]  # longer than the 48-token sliding windows
    with torch.inference_mode():
        plain = model(input_ids=torch.tensor([ids])).logits[0]
        model.set_attn_implementation("l2m")
        cache = PrefixCache(model)
        ours = [cache.feed(ids[:60]), cache.feed(ids[60:80]), *(cache.feed([t]) for t in ids[80:])]
    expected = plain[[59, 79, *range(80, 90)]]
    assert torch.allclose(torch.stack(ours), expected, atol=1e-4), (torch.stack(ours) - expected).abs().max()


def _counting_forward(lm, monkeypatch) -> list[int]:
    fed: list[int] = []
    forward = lm.model.forward

    def counted(*args, **kwargs):
        fed.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)
    monkeypatch.setattr(lm.model, "forward", counted)
    return fed


def test_decoder_matches_generate_and_recomputes_only_the_new_suffix(lm, monkeypatch):
    first = [5 + (i * 7) % 200 for i in range(300)]
    second = first[:250] + [9] * 40
    lm.model.set_attn_implementation("sdpa")
    try:
        expected = [lm.tokenizer.decode(lm.model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                                          min_new_tokens=6)[0, len(ids):], skip_special_tokens=True)
                    for ids in (first, second)]
    finally:
        lm.model.set_attn_implementation("l2m")
    decoder = GreedyDecoder(lm)  # the engine's attention stays set: without a plan it is the plain model
    fed = _counting_forward(lm, monkeypatch)
    assert decoder.generate(first, 6) == expected[0]
    assert fed[0] == 300
    fed.clear()
    assert decoder.generate(second, 6) == expected[1]
    assert fed[0] == 40  # the 250 shared tokens came from the cache
    fed.clear()
    assert decoder.generate(second, 6) == expected[1]
    assert fed[0] == 1   # an identical prompt feeds only its last token


def test_batched_replies_are_each_prompt_s_own_greedy_reply_in_the_order_given(lm):
    """Left padding and batching change nothing: every reply equals the one-prompt decoder's, stop included."""
    prompts = [[5 + (i * k) % 200 for i in range(n)] for k, n in ((7, 40), (3, 9), (11, 25), (5, 60), (13, 2))]
    decoder = GreedyDecoder(lm)
    free = generate(decoder.cache, prompts[0], decoder.stop, 12)
    stop = decoder.stop | {free.tokens[6]}  # a token the first reply reaches: it ends there, others may not
    expected = [generate(decoder.cache, ids, stop, 12) for ids in prompts]
    assert expected[0].stop == free.tokens[6] and any(g.stop is None for g in expected)
    done = []
    assert generate_batch(lm, prompts, stop, 12, batch_size=2, progress=done.append) == expected
    assert done == [2, 4, 5]
