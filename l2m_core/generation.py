"""Greedy decoding: the one loop and the one stop set behind every reply the project generates.

The memory engine (`Memory.ask`, whose cache is the read plan), the plain model of the evaluation
baselines and the LM2 memory model all decode with `greedy`, so a baseline and a memory read of the same
prompt stop at the same token. `PrefixCache` is the plain model's key/value cache: it outlives one reply,
so a prompt that shares a prefix with the last one recomputes only the rest (samples of one evaluation
length share their haystack up to the first needle).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedModel

from l2m_core.loading import LoadedModel

ChooseToken = Callable[[torch.Tensor], int]  # next-token logits -> the token to emit
# Chat templates' end-of-turn markers (ChatML, Llama 3, Gemma, Phi-3): a chat reply ends there even where the
# tokenizer's eos is another token (a base model's "<|endoftext|>").
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def stop_ids(tokenizer, model: PreTrainedModel) -> frozenset[int]:
    """The tokens that end a reply: the tokenizer's eos, the model's generation eos (one id or a list) and
    the chat end-of-turn markers the tokenizer has. `tokenizer` may be None (prompts given as ids)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos])
    if tokenizer is not None:
        ids.add(tokenizer.eos_token_id)
        for marker in END_OF_TURN:
            token = tokenizer.convert_tokens_to_ids(marker)
            if isinstance(token, int) and token != tokenizer.unk_token_id:
                ids.add(token)
    return frozenset(i for i in ids if i is not None)


@dataclass
class Generation:
    tokens: list[int]   # the reply, without the stop token
    stop: int | None    # the stop token that ended it; None: `max_new_tokens` did


def greedy(logits: torch.Tensor, feed: Callable[[int], torch.Tensor], stop: Collection[int], max_new_tokens: int,
           choose_token: ChooseToken | None = None) -> Generation:
    """Decode from the prompt's next-token `logits`: take the argmax (or `choose_token`'s choice, e.g. a
    grammar's), end at a `stop` token or after `max_new_tokens`; `feed(token)` runs the model on the token
    just chosen (against its cache) and returns the next logits. The last token is never fed."""
    out: list[int] = []
    while len(out) < max_new_tokens:
        token = int(logits.argmax()) if choose_token is None else choose_token(logits)
        if token in stop:
            return Generation(out, token)
        out.append(token)
        if len(out) < max_new_tokens:
            logits = feed(token)
    return Generation(out, None)


class PrefixCache:
    """The plain model's key/value cache of the tokens fed so far (`ids`).

    Prompts are prefilled in chunks of `chunk_tokens`; one pass is fastest on CPU (a prefill against a cache
    takes the masked attention path, measured 1.7x slower for 4K tokens in 1K chunks). With the engine's
    attention set and no plan active the model is plain attention with SDPA's masks, so a suffix prefilled
    against a cached prefix is exact (tests/test_generation.py).
    """

    def __init__(self, model: PreTrainedModel, chunk_tokens: int = 8192):
        self.model, self.chunk_tokens = model, chunk_tokens
        self.ids: list[int] = []
        self._cache = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self) -> None:
        self.ids, self._cache = [], None

    def prompt(self, ids: list[int]) -> torch.Tensor:
        """The next-token logits after `ids`, recomputing only what follows the prefix they share with `self.ids`."""
        if not ids:
            raise ValueError("an empty prompt has no next token")
        self._rewind(ids)
        return self.feed(ids[len(self.ids):])

    def feed(self, ids: list[int]) -> torch.Tensor:
        """Run the model on `ids` after the cached tokens; the next-token logits."""
        try:
            for i in range(0, len(ids), self.chunk_tokens):
                chunk = torch.tensor([ids[i:i + self.chunk_tokens]], device=self.device)
                out = self.model(input_ids=chunk, cache=self._cache, use_cache=True, logits_to_keep=1)
                self._cache = out.cache
                self.ids.extend(ids[i:i + self.chunk_tokens])
        except BaseException:
            self.reset()  # a half-fed cache must not be reused
            raise
        return out.logits[0, -1]

    def _rewind(self, ids: list[int]) -> None:
        """Keep the cached prefix that `ids` shares, leaving at least one token to feed."""
        common = 0
        limit = min(len(self.ids), len(ids) - 1)
        while common < limit and self.ids[common] == ids[common]:
            common += 1
        if common == 0:
            self._cache = None
        elif common < len(self.ids):
            self._cache.crop(common - len(self.ids))  # transformers 5.x: a negative count of tokens to drop
        self.ids = self.ids[:common]


@torch.inference_mode()
def generate(cache: PrefixCache, ids: list[int], stop: Collection[int], max_new_tokens: int,
             choose_token: ChooseToken | None = None) -> Generation:
    """The plain model's greedy reply to the prompt `ids` (reusing `cache`'s shared prefix)."""
    logits = cache.prompt(ids)
    return greedy(logits, lambda token: cache.feed([token]), stop, max_new_tokens, choose_token)


@torch.inference_mode()
def generate_batch(lm: LoadedModel, prompts: list[list[int]], stop: Collection[int], max_new_tokens: int,
                   batch_size: int = 8, progress: Callable[[int], None] | None = None) -> list[Generation]:
    """The plain model's greedy replies to many prompts, `batch_size` at a time (left-padded, by transformers'
    `generate`; prompts of similar length share a batch), in the order given. Batches of 8 took 0.4-0.6 of the time
    of one prompt at a time on a 2-core CPU (the reader's oracle targets). `progress(done)` follows each batch."""
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else min(stop)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stop),
                              pad_token_id=pad)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: dict[int, Generation] = {}
    for first in range(0, len(order), batch_size):
        batch = [prompts[i] for i in order[first:first + batch_size]]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=lm.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=lm.device)
        rows = lm.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:].tolist()
        for i, row in zip(order[first:first + batch_size], rows, strict=True):
            end = next((n for n, token in enumerate(row) if token in stop), None)
            out[i] = Generation(row, None) if end is None else Generation(row[:end], row[end])
        if progress is not None:
            progress(len(out))
    return [out[i] for i in range(len(prompts))]


class GreedyDecoder:
    """Greedy text replies of a loaded model to prompts given as token ids (the evaluation baselines)."""

    def __init__(self, lm: LoadedModel, chunk_tokens: int = 8192):
        self.lm = lm
        self.cache = PrefixCache(lm.model, chunk_tokens)
        self.stop = stop_ids(lm.tokenizer, lm.model)

    def generate(self, ids: list[int], max_new_tokens: int) -> str:
        """The decoded greedy continuation of `ids`, stopping at a stop token or `max_new_tokens`."""
        reply = generate(self.cache, ids, self.stop, max_new_tokens)
        return self.lm.tokenizer.decode(reply.tokens, skip_special_tokens=True)
