"""Choosing among a few written-out options by the model's likelihood of each.

Greedy constrained decoding of an enum (`l2m_core.grammar`) commits to the option whose *first* token the
model likes best, which favours short, common openings over the option the model wants as a whole. Here
each option is scored whole: the sum of the log-probabilities of its tokens after `prompt`, the prompt
run once and its cache reused for every option.
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
