"""Wiring a learned memory into a Hugging Face decoder, and running long inputs segment by segment.

Each decoder block gets a forward hook: the block runs unchanged, then its output reads the block's
memory bank (see `memory.py`). Hooks keep the base model's module tree and state dict as they were, so
the base still saves, fingerprints and loads normally, and detaching restores it exactly.

A long input is cut into segments; every segment is a separate forward pass (attention stays inside
it), reads the banks written after the earlier segments, and writes the banks the next one reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from l2m_core.errors import L2MError
from l2m_core.generation import PrefixCache, generate, stop_ids
from l2m_core.lm2.lora import LoRA
from l2m_core.lm2.memory import LM2Memory, MemoryConfig

DEFAULT_QUESTION_TEMPLATE = "Question: {question}\nAnswer:"
MemoryState = dict[int, torch.Tensor]


@dataclass
class SegmentOutput:
    logits: torch.Tensor
    state: MemoryState | None
    states: dict[int, torch.Tensor]  # each memory layer's output hidden states (after its read)
    reads: dict[int, torch.Tensor]   # what each memory layer's attention over the slots found (attn_dim wide)


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The decoder blocks of a supported (Llama-family) causal LM: `model.model.layers`."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise L2MError(f"cannot attach a learned memory to {type(model).__name__}: no model.layers "
                       "(supported: Llama-family decoders such as Llama, Qwen2, Mistral, SmolLM2)")
    return layers


def default_config(model: PreTrainedModel, **overrides) -> MemoryConfig:
    cfg = model.config
    attn_dim = overrides.pop("attn_dim", None) or min(cfg.hidden_size, 128)
    return MemoryConfig(hidden_size=cfg.hidden_size, num_layers=cfg.num_hidden_layers, attn_dim=attn_dim,
                        **overrides)


class MemoryAugmentedModel:
    """A base causal LM plus its LM2 memory (and optional LoRA), reading and writing per segment."""

    def __init__(self, model: PreTrainedModel, memory: LM2Memory, tokenizer: PreTrainedTokenizerBase | None = None,
                 lora: LoRA | None = None, question_template: str = DEFAULT_QUESTION_TEMPLATE,
                 segment_len: int = 64):
        self.model, self.memory, self.tokenizer, self.lora = model, memory, tokenizer, lora
        self.question_template, self.segment_len = question_template, segment_len
        self._banks: MemoryState | None = None
        self._states: dict[int, torch.Tensor] = {}
        self._reads: dict[int, torch.Tensor] = {}
        layers = decoder_layers(model)
        if getattr(model, "_l2m_memory", None) is not None:
            raise L2MError("this model already has a learned memory attached; detach it first")
        if memory.config.num_layers != len(layers) or memory.config.hidden_size != model.config.hidden_size:
            raise L2MError(f"memory shaped for {memory.config.num_layers} layers x {memory.config.hidden_size} "
                           f"does not fit this model ({len(layers)} layers x {model.config.hidden_size})")
        self._handles = [layers[i].register_forward_hook(self._hook(i)) for i in memory.config.layers]
        model._l2m_memory = self
        if lora is not None:
            lora.attach()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The modules an adapter holds, by the prefix their tensors are saved under."""
        return {"memory": self.memory} | ({"lora": self.lora} if self.lora is not None else {})

    def detach(self) -> PreTrainedModel:
        """Remove the hooks (memory and LoRA) and return the base model as it was."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if getattr(self.model, "_l2m_memory", None) is self:
            self.model._l2m_memory = None
        if self.lora is not None:
            self.lora.detach()
        return self.model

    def _hook(self, layer: int):
        def hook(module, args, output):
            if self._banks is None:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            hidden, found = self.memory.block(layer).read(hidden, self._banks[layer])
            self._states[layer], self._reads[layer] = hidden, found
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    def initial_state(self, batch: int = 1) -> MemoryState:
        return self.memory.initial_state(batch)

    def forward_segment(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        state: MemoryState | None = None, write: bool = True, **model_kwargs) -> SegmentOutput:
        """Run one segment (B, T) reading `state`; return logits and the state written from this segment.

        `state=None` runs the plain base model (no read, no write): the no-memory baseline.
        """
        valid = None
        if attention_mask is not None:
            valid = attention_mask.bool()
            # a row that is all padding still attends to its first token, so no softmax row is empty (NaN)
            first = torch.zeros_like(valid)
            first[:, 0] = True
            attention_mask = valid | (first & ~valid.any(-1, keepdim=True))
        self._banks, self._states, self._reads = state, {}, {}
        try:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **model_kwargs)
        finally:
            self._banks = None
        states, reads = self._states, self._reads
        self._states, self._reads = {}, {}
        new_state = state
        if state is not None and write:
            new_state = {i: self.memory.block(i).write(state[i], states[i], valid) for i in state}
        return SegmentOutput(out.logits, new_state, states, reads)

    @torch.no_grad()
    def memorize(self, text: str | list[int], segment_len: int | None = None,
                 state: MemoryState | None = None) -> MemoryState:
        """Write a long text (or token ids) into memory, one segment at a time."""
        ids = self._encode(text) if isinstance(text, str) else list(text)
        segment_len = segment_len or self.segment_len
        state = state if state is not None else self.initial_state(1)
        for start in range(0, len(ids), segment_len):
            chunk = torch.tensor([ids[start:start + segment_len]], device=self.device)
            state = self.forward_segment(chunk, state=state).state
        return state

    def generate(self, prompt: str | list[int], state: MemoryState | None, max_new_tokens: int = 16) -> list[int]:
        """Greedy decoding of a local prompt that reads (never writes) the memory `state`."""
        ids = self._encode(prompt) if isinstance(prompt, str) else list(prompt)
        self._banks = state
        try:
            return generate(PrefixCache(self.model), ids, stop_ids(self.tokenizer, self.model), max_new_tokens).tokens
        finally:
            self._banks, self._states, self._reads = None, {}, {}

    def answer(self, text: str, question: str, segment_len: int | None = None, max_new_tokens: int = 16) -> str:
        """Read `text` into memory segment by segment, then answer `question` from memory (first line)."""
        state = self.memorize(text, segment_len)
        produced = self.generate(self.question_template.format(question=question), state, max_new_tokens)
        return self._require_tokenizer().decode(produced, skip_special_tokens=True).strip().split("\n")[0].strip()

    def _encode(self, text: str) -> list[int]:
        return self._require_tokenizer()(text, add_special_tokens=False)["input_ids"]

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise L2MError("this memory-augmented model has no tokenizer; pass one to attach_memory")
        return self.tokenizer


def attach_memory(model: PreTrainedModel, adapter: str | os.PathLike | MemoryConfig | None = None,
                  tokenizer: PreTrainedTokenizerBase | None = None, lora_rank: int = 0,
                  **config_overrides) -> MemoryAugmentedModel:
    """Attach a learned memory to `model`: a fresh one (`None` or a `MemoryConfig`) or a saved adapter.

    A fresh memory is created on the model's device and dtype; its output gates start at zero, so the
    model's logits are unchanged until it is trained. Loading an adapter checks the base fingerprint.
    """
    if isinstance(adapter, (str, os.PathLike)):
        from l2m_core.lm2.adapter import load_adapter

        return load_adapter(Path(adapter), model, tokenizer)
    config = adapter if isinstance(adapter, MemoryConfig) else default_config(model, **config_overrides)
    param = next(model.parameters())
    memory = LM2Memory(config, device=param.device, dtype=param.dtype)
    lora = LoRA(model, lora_rank) if lora_rank else None
    return MemoryAugmentedModel(model, memory, tokenizer, lora)

