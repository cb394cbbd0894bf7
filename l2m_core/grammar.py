"""Grammar-constrained decoding: the model's output is valid JSON of a given schema by construction (or
matches a Lark grammar that embeds JSON schemas, for tool calls in a model family's own format).

`JsonGrammar(tokenizer, schema, vocab, stop_id)` is a token chooser for `Memory.ask(choose_token=...)`: at
each step it asks llguidance which tokens keep the output a prefix of a valid document, masks the
rest of the logits and takes the best of what is left (greedy, like the plain loop); once the document
is complete only a stop token is allowed, so decoding ends exactly there. llguidance (a Rust library
with no Python dependencies) was chosen over xgrammar (which pulls in triton and a second runtime) for
its fit with our own decoding loop; `bench/bench_grammar.py` measures its per-token overhead on CPU.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import llguidance
import numpy as np
import torch

from l2m_core.errors import L2MError

# At most one space between JSON tokens: a greedy model that likes whitespace cannot loop on it.
JSON_WHITESPACE = r"[ ]?"
_JSON_OPTIONS: llguidance.JsonCompileOptions = {"whitespace_pattern": JSON_WHITESPACE}


@lru_cache(maxsize=4)
def _ll_tokenizer(tokenizer_json: str, vocab: int, stop_ids: tuple[int, ...]) -> llguidance.LLTokenizer:
    """The llguidance view of a tokenizer (about a second to build, so kept per tokenizer)."""
    return llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab, eos_token=list(stop_ids))


def ll_tokenizer(tokenizer: Any, vocab: int, stop_ids: Iterable[int]) -> llguidance.LLTokenizer:
    """llguidance's tokenizer for a fast (Rust-backed) Hugging Face tokenizer and a logits width `vocab`."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise L2MError("constrained decoding needs a fast (tokenizers-backed) tokenizer")
    backend = copy.copy(backend)
    backend.no_padding()
    backend.no_truncation()
    return _ll_tokenizer(backend.to_str(), vocab, tuple(sorted(stop_ids)))


class JsonGrammar:
    """Greedy choice restricted to tokens that keep the output valid for `schema` (a JSON schema dict), or
    for `lark` (llguidance's Lark syntax, `%json {...}` for embedded schemas) when given instead.

    One instance decodes one document; `text` is not needed afterwards because the decoded tokens are
    the document. Raises `L2MError` for a schema or grammar llguidance cannot compile.
    """

    def __init__(self, tokenizer: llguidance.LLTokenizer, schema: dict | None, vocab: int, stop_id: int,
                 lark: str | None = None):
        grammar = llguidance.LLMatcher.grammar_from_lark(lark) if lark is not None else \
            llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS)
        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise L2MError(f"cannot compile the output schema: {self.matcher.get_error()}")
        self.tokenizer, self.vocab, self.stop_id = tokenizer, vocab, stop_id
        self.mask = np.zeros((vocab + 31) // 32, dtype=np.int32)
        self.steps = 0
        self.chosen: list[tuple[int, float]] = []  # each token and the model's own (unmasked) log-probability

    @classmethod
    def for_memory(cls, memory: Any, schema: dict | None = None, lark: str | None = None) -> JsonGrammar:
        """A grammar for a `Memory`'s model: its tokenizer, its logits width, its stop tokens."""
        stop_ids = sorted(memory.stop_ids)
        vocab = memory.model.config.vocab_size
        return cls(ll_tokenizer(memory.tokenizer, vocab, stop_ids), schema, vocab, stop_ids[0], lark)

    def __call__(self, logits: torch.Tensor) -> int:
        """The best allowed next token; consumes it. A stop token once the document is complete."""
        if self.matcher.is_stopped() or self.matcher.is_error():
            return self.stop_id
        self.matcher.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
        allowed = np.unpackbits(self.mask.view(np.uint8), bitorder="little")[:logits.shape[-1]]
        masked = logits.float().masked_fill(torch.from_numpy(allowed == 0).to(logits.device), float("-inf"))
        token = int(masked.argmax())
        self.matcher.consume_token(token)
        self.steps += 1
        self.chosen.append((token, float(torch.log_softmax(logits.float(), -1)[token])))
        return token

    def pieces(self) -> list[tuple[str, float]]:
        """The text of each token chosen, with the model's log-probability of it (how much it wanted it)."""
        return [(self.tokenizer.decode_str([token]), logprob) for token, logprob in self.chosen]

    @property
    def complete(self) -> bool:
        """Whether the tokens chosen so far form a whole document."""
        return self.matcher.is_accepting() or self.matcher.is_stopped()


def ask_json(memory: Any, question: str, schema: dict, **ask: Any) -> tuple[Any, Any, list[tuple[str, float]]]:
    """(the JSON value, the `Answer`, its tokens' `pieces`) of `memory.ask(question, **ask)` decoded against
    `schema`. Raises `L2MError` when the token limit cut the document off before it was complete."""
    grammar = JsonGrammar.for_memory(memory, schema)
    answer = memory.ask(question, choose_token=grammar, **ask)
    if not grammar.complete:
        raise L2MError(f"the constrained reply was cut off by the token limit after {grammar.steps} tokens")
    return json.loads(answer.text), answer, grammar.pieces()
