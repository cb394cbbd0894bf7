"""Choosing by the model's likelihood: among a few written-out options, and among passages.

Greedy constrained decoding of an enum (`l2m_core.grammar`) commits to the option whose *first* token the
model likes best, which favours short, common openings over the option the model wants as a whole. Here
each option is scored whole: the sum of the log-probabilities of its tokens after `prompt`, the prompt
run once and its cache reused for every option. `question_likelihoods` turns it round: which of a few
passages best explains a question (the memory's citations are ordered by it).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch


@torch.inference_mode()
def option_logprobs(model: Any, tokenizer: Any, prompt: str, options: Sequence[str], mean: bool = False) -> list[float]:
    """For each option, log P(option | prompt) under `model` (a Hugging Face causal LM), summed over its tokens
    (`mean`: averaged, so that a long option is not outscored for its length alone). Options are tokenized
    after the prompt as written (so start them with the space the prompt leaves out)."""
    device = next(model.parameters()).device
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    out = model(torch.tensor([prompt_ids], device=device), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), -1)
    scores = []
    for option in options:
        ids = tokenizer(option, add_special_tokens=False).input_ids
        total = float(first[ids[0]])
        if len(ids) > 1:
            rest = model(torch.tensor([ids[:-1]], device=device), past_key_values=copy.deepcopy(out.past_key_values),
                         use_cache=True)
            logprobs = torch.log_softmax(rest.logits[0].float(), -1)
            total += float(logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
        scores.append(total / len(ids) if mean else total)
    return scores


@torch.inference_mode()
def question_likelihoods(model: Any, tokenizer: Any, passages: Sequence[str], question: str,
                         max_tokens: int = 700) -> list[float]:
    """For each passage, the mean log-probability of `question`'s tokens after the passage and a request to
    write a question about it: how well the passage explains the question, whatever words they share
    (unsupervised passage re-ranking, "UPR", Sachan et al. 2022). The prompt is cut to its last `max_tokens`
    tokens; all passages run as one left-padded batch, logits kept for the question's tokens only."""
    device = next(model.parameters()).device
    q = tokenizer(" " + question, add_special_tokens=False).input_ids
    if not q or not passages:
        return [0.0] * len(passages)
    rows = [tokenizer(f"Passage: {p}\n\nPlease write a question based on this passage.\nQuestion:",
                      add_special_tokens=False).input_ids[-max_tokens:] + q for p in passages]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows], device=device)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=device)
    logits = model(ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                   logits_to_keep=len(q) + 1).logits[:, :-1].float()
    logprobs = torch.log_softmax(logits, -1)[:, torch.arange(len(q), device=device), torch.tensor(q, device=device)]
    return logprobs.mean(-1).tolist()
