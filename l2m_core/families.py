"""What differs between decoder families, in one place, so that no model class is patched.

Every supported family projects q/k/v, applies its q/k norms and rotary embedding, and then calls the attention
function registered for `config._attn_implementation` (attention.py) with the layer's `scaling` and, where the
family has them, `softcap` and `sliding_window` keyword arguments. What is left for the memory engine:

- per-layer attention traits, read from those arguments (`LayerTraits`): query scaling (Gemma's
  `query_pre_attn_scalar`), soft-capped attention logits (Gemma 2), sliding windows (Mistral on every layer,
  Gemma 2/3 and Qwen on the layers typed `sliding_attention`);
- the rotary embedding of a layer (`rotary_for`): Gemma 3 has a local and a global one, chosen by layer type;
  SmolLM3 has layers with none (stored keys there are position-free as they are); partial rotary (Phi-3) is
  seen in the width of the model's cos/sin and handled in rope.py.

Fused q/k/v projections (Phi-3), q/k norms (Qwen3, Gemma 3), embedding and final-logit scaling (Gemma) all
happen inside the model, before or after the attention function, and need nothing here. Families that rotate
interleaved channel pairs (Helium, Cohere) are not supported: rope.py rotates halves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from l2m_core.errors import L2MError

# model_type -> what the engine handles for it (each is tested with a tiny random model: tests/test_families.py)
FAMILIES: dict[str, str] = {
    "llama": "Llama 1-3 (also llama3 rope scaling), SmolLM",
    "mistral": "sliding window on every layer",
    "qwen2": "Qwen2/2.5, attention biases, optional sliding layers",
    "qwen3": "q/k norms",
    "gemma": "Gemma 1",
    "gemma2": "soft-capped attention logits, query_pre_attn_scalar, alternating sliding windows",
    "gemma3_text": "Gemma 3 (text): local and global rotary per layer type, q/k norms, sliding windows",
    "phi3": "fused qkv, partial rotary",
    "olmo2": "q/k norms over all heads",
    "granite": "attention and residual multipliers",
    "starcoder2": "sliding window, biases",
    "mixtral": "sliding window, mixture of experts (outside attention)",
    "qwen3_moe": "q/k norms, mixture of experts (outside attention)",
    "smollm3": "SmolLM3: layers without rotary positions (NoPE)",
}


def check_supported(config) -> None:
    """Refuse a model whose attention the engine does not handle, in one line."""
    arch = getattr(config, "model_type", None)
    if arch not in FAMILIES:
        raise L2MError(f"the memory engine does not support {arch!r} models yet "
                       f"(supported: {', '.join(sorted(FAMILIES))})")


@dataclass(frozen=True)
class LayerTraits:
    """How one layer turns query-key products into attention weights."""
    scaling: float
    softcap: float | None = None   # logits become softcap * tanh(logits / softcap)
    window: int | None = None      # a query at position p sees keys at positions p - window < k <= p

    def logits(self, scores: torch.Tensor) -> torch.Tensor:
        """Scaled (and soft-capped) attention logits from raw query-key products, in float32."""
        scores = scores.float() * self.scaling
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        return scores

    def visible(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """`[q, T]` bool: which keys (by position) each query sees: causal, within the window if any."""
        seen = k_pos[None, :] <= q_pos[:, None]
        if self.window is not None:
            seen &= k_pos[None, :] > q_pos[:, None] - self.window
        return seen


def layer_traits(module, scaling: float | None, kwargs: dict) -> LayerTraits:
    """The traits of the layer that called the attention function with these arguments."""
    return LayerTraits(scaling if scaling is not None else module.head_dim ** -0.5,
                       kwargs.get("softcap"), kwargs.get("sliding_window"))


def rotary_for(model) -> Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]:
    """`f(probe, position_ids, layer) -> (cos, sin)` with the model's own rotary module for that layer."""
    module, config = model.model.rotary_emb, model.config
    if _typed_rotary(module):  # Gemma 3: one rotary per layer type
        def call(probe, positions, layer):
            return module(probe, positions, config.layer_types[layer])
    else:
        def call(probe, positions, layer):
            return module(probe, positions)
    rope_layers = getattr(config, "no_rope_layers", None)  # SmolLM3: 1 where a layer rotates, 0 where it does not
    if rope_layers is None:
        return call

    def maybe_none(probe, positions, layer):
        cos, sin = call(probe, positions, layer)
        return (cos, sin) if rope_layers[layer] else (torch.ones_like(cos), torch.zeros_like(sin))
    return maybe_none


def rotary_kinds(model) -> list[tuple]:
    """Per layer, what `rotary_for`'s cos/sin depend on besides the positions: layers of one kind share them."""
    config = model.config
    typed = _typed_rotary(model.model.rotary_emb)
    rope_layers = getattr(config, "no_rope_layers", None)
    return [(config.layer_types[i] if typed else None, rope_layers[i] if rope_layers is not None else None)
            for i in range(config.num_hidden_layers)]


def _typed_rotary(module) -> bool:
    return "layer_type" in inspect.signature(module.forward).parameters
