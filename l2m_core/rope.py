"""Rotary positions for stored keys: memory keys are kept un-rotated and rotated to any position on read.

RoPE turns a key `k` at position `p` into `k*cos(p) + rot(k)*sin(p)`, a rotation in each channel pair;
the inverse rotation uses `-sin`. Both use the model's own rotary module, so scaled variants (Llama 3)
are handled the same way the model handles them.
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary:
    def __init__(self, model):
        self.rotary = model.model.rotary_emb

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for `positions` (1-D), shaped to broadcast over `[batch, heads, tokens, dim]`."""
        probe = torch.zeros(1, dtype=dtype, device=positions.device)
        cos, sin = self.rotary(probe, positions[None])
        return cos[:, None], sin[:, None]

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos_sin(positions, x.dtype)
        return x * cos + rotate_half(x) * sin

    def unrotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos_sin(positions, x.dtype)
        return x * cos - rotate_half(x) * sin
