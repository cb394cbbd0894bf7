"""Rotary positions for stored keys: memory keys are kept un-rotated and rotated to any position on read.

RoPE turns a key `k` at position `p` into `k*cos(p) + rot(k)*sin(p)`, a rotation in each channel pair;
the inverse rotation uses `-sin`. Both use the model's own rotary module for the layer (families.rotary_for),
so scaled variants (Llama 3) and per-layer-type rotaries (Gemma 3) are handled the way the model handles them.
With partial rotary (Phi-3) the model's cos/sin cover only the first channels; the rest pass through unrotated.
"""

from __future__ import annotations

import torch

from l2m_core.families import rotary_for


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary:
    def __init__(self, model):
        self.rotary = rotary_for(model)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype, layer: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for `positions` (1-D), shaped to broadcast over `[batch, heads, tokens, rotary dim]`."""
        probe = torch.zeros(1, dtype=dtype, device=positions.device)
        cos, sin = self.rotary(probe, positions[None], layer)
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
