"""Rotary positions for stored keys: memory keys are kept un-rotated and rotated to any position on read.

RoPE turns a key `k` at position `p` into `k*cos(p) + rot(k)*sin(p)`, a rotation in each channel pair;
the inverse rotation uses `-sin`. Both use the model's own rotary module for the layer (families.rotary_for),
so scaled variants (Llama 3) and per-layer-type rotaries (Gemma 3) are handled the way the model handles them.
With partial rotary (Phi-3) the model's cos/sin cover only the first channels; the rest pass through unrotated.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from l2m_core.families import rotary_for, rotary_kinds

MEMO = 8  # cos/sin tables kept: a chunk's prefix and current positions, in each layer kind


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary:
    def __init__(self, model):
        self.rotary = rotary_for(model)
        self.kinds = rotary_kinds(model)
        self._memo: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = OrderedDict()

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype, layer: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for `positions` (1-D), shaped to broadcast over `[batch, heads, tokens, rotary dim]`.

        Every layer of a forward pass turns keys by the same positions tensors, so the last few tables are
        kept, keyed by the tensor itself (positions tensors are never changed in place; an entry holds its
        tensor, so the id is not reused while the entry lives) and the layer's kind of rotary."""
        key = (id(positions), dtype, self.kinds[layer], torch.is_inference_mode_enabled())
        hit = self._memo.get(key)
        if hit is not None and hit[0] is positions:
            return hit[1], hit[2]
        probe = torch.zeros(1, dtype=dtype, device=positions.device)
        cos, sin = self.rotary(probe, positions[None], layer)
        self._memo[key] = (positions, cos[:, None], sin[:, None])
        if len(self._memo) > MEMO:
            self._memo.popitem(last=False)
        return cos[:, None], sin[:, None]

    def rotate(self, x: torch.Tensor, positions: torch.Tensor, layer: int) -> torch.Tensor:
        return self._turn(x, positions, layer, 1)

    def unrotate(self, x: torch.Tensor, positions: torch.Tensor, layer: int) -> torch.Tensor:
        return self._turn(x, positions, layer, -1)

    def _turn(self, x: torch.Tensor, positions: torch.Tensor, layer: int, sign: int) -> torch.Tensor:
        cos, sin = self.cos_sin(positions, x.dtype, layer)
        width = cos.shape[-1]
        if width == x.shape[-1]:
            return x * cos + sign * rotate_half(x) * sin
        turned, passed = x[..., :width], x[..., width:]
        return torch.cat([turned * cos + sign * rotate_half(turned) * sin, passed], dim=-1)
