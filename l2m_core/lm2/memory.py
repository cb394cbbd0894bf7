"""The LM2 memory bank of one decoder block: slots read by the block's tokens, written once per segment.

Read: each token queries the N slots (cross-attention); the result goes through a zero-initialised output
projection and an output gate `sigmoid(W q)`, is scaled to the token's RMS, and is added to the token's
hidden state. The zero projection makes a fresh module leave the base model's outputs exactly unchanged,
yet (unlike a zero gate scalar) every one of its entries learns from the first step. A read mixes no
tokens: token t sees only itself and the bank.
Write: at the end of a segment the slots query that segment's hidden states (padding masked) and an
LSTM-like update `M' = g_in * tanh(E) + g_forget * M` (forget bias 1.0) gives the bank the next segment
reads. A segment therefore reads only what earlier segments wrote: causal by construction.

Unlike the reference code (convergence-ai/lm2): parameters follow the base model's device and dtype,
every projection is its own layer, no attention dropout, attention runs in a small `attn_dim` space so
the module stays light on a 576-wide model, and the gates see slot-wise evidence, not a sequence mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MemoryConfig:
    """Shape of a memory module. `layers` empty means every decoder block of the base model."""

    hidden_size: int
    num_layers: int
    slots: int = 16
    heads: int = 4
    attn_dim: int = 128
    forget_bias: float = 1.0
    layers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.attn_dim % self.heads:
            raise ValueError(f"attn_dim {self.attn_dim} is not divisible by heads {self.heads}")
        self.layers = sorted(set(self.layers)) or list(range(self.num_layers))
        if not all(0 <= i < self.num_layers for i in self.layers):
            raise ValueError(f"memory layers {self.layers} outside the model's {self.num_layers} layers")

    def to_dict(self) -> dict:
        return asdict(self)


POSITION_DIM = 32


def position_code(length: int, like: torch.Tensor) -> torch.Tensor:
    """Sinusoidal codes of positions 0..length-1 inside a segment (length, POSITION_DIM).

    Hidden states of a RoPE model carry no explicit position; the write keys get one so that slots can
    tell facts apart by order (bAbI asks for the latest location), not only by content.
    """
    pos = torch.arange(length, device=like.device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, POSITION_DIM, 2, device=like.device) * (-math.log(1000.0) / POSITION_DIM))
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).to(like.dtype)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
            key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of q (B, Q, A) over k, v (B, K, A); key_mask (B, K) marks usable keys."""
    b, nq, a = q.shape
    split = lambda x: x.view(b, x.shape[1], heads, a // heads).transpose(1, 2)  # noqa: E731
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return out.transpose(1, 2).reshape(b, nq, a)


class LayerMemory(nn.Module):
    """The memory of one decoder block: an initial bank plus read and write parameters."""

    def __init__(self, config: MemoryConfig, device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        d, a = config.hidden_size, config.attn_dim
        kw = {"device": device, "dtype": dtype}
        self.heads = config.heads
        self.initial = nn.Parameter(torch.eye(config.slots, d, **kw))
        # read: tokens query the slots
        self.token_norm = nn.RMSNorm(d, **kw)
        self.slot_norm = nn.RMSNorm(d, **kw)
        self.read_q = nn.Linear(d, a, bias=False, **kw)
        self.read_k = nn.Linear(d, a, bias=False, **kw)
        self.read_v = nn.Linear(d, a, bias=False, **kw)
        self.read_out = nn.Linear(a, d, bias=False, **kw)
        self.gate = nn.Linear(a, d, **kw)
        # write: slots query the segment's states
        self.state_norm = nn.RMSNorm(d, **kw)
        self.write_q = nn.Linear(d, a, bias=False, **kw)
        self.write_k = nn.Linear(d, a, bias=False, **kw)
        self.write_v = nn.Linear(d, a, bias=False, **kw)
        self.write_pos = nn.Linear(POSITION_DIM, a, bias=False, **kw)
        self.candidate = nn.Linear(2 * a, d, **kw)
        self.input_gate = nn.Linear(2 * a, d, **kw)
        self.forget_gate = nn.Linear(2 * a, d, **kw)
        with torch.no_grad():
            self.forget_gate.bias.fill_(config.forget_bias)
            self.read_out.weight.zero_()

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.initial.unsqueeze(0).expand(batch, -1, -1)

    def read(self, hidden: torch.Tensor, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (hidden + gated read, what attention over the slots found (B, T, attn_dim))."""
        q = self.read_q(self.token_norm(hidden))
        slots = self.slot_norm(bank)
        attended = _attend(q, self.read_k(slots), self.read_v(slots), self.heads)
        # the read enters at the residual stream's own scale (pretrained streams run to norms in the hundreds)
        scale = hidden.float().pow(2).mean(-1, keepdim=True).sqrt().to(hidden.dtype)
        return hidden + torch.sigmoid(self.gate(q)) * scale * self.read_out(attended), attended

    def write(self, bank: torch.Tensor, states: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The bank after a segment whose hidden states (B, T, d) are `states`; `valid` (B, T) masks padding.

        A row with no valid token (a segment that is all padding for that sequence) keeps its bank.
        """
        q = self.write_q(self.slot_norm(bank))
        s = self.state_norm(states)
        keys = self.write_k(s) + self.write_pos(position_code(states.shape[1], states))
        mask = None
        if valid is not None:
            mask = valid | ~valid.any(-1, keepdim=True)  # never a fully masked row: softmax would be NaN
        summary = _attend(q, keys, self.write_v(s), self.heads, mask)
        z = torch.cat([summary, q], dim=-1)
        new = torch.sigmoid(self.input_gate(z)) * torch.tanh(self.candidate(z)) \
            + torch.sigmoid(self.forget_gate(z)) * bank
        if valid is None:
            return new
        return torch.where(valid.any(-1)[:, None, None], new, bank)


class LM2Memory(nn.Module):
    """One `LayerMemory` per memory layer of the base model (each with its own parameters)."""

    def __init__(self, config: MemoryConfig, device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleDict({str(i): LayerMemory(config, device, dtype) for i in config.layers})

    def initial_state(self, batch: int) -> dict[int, torch.Tensor]:
        return {int(i): block.initial_state(batch) for i, block in self.blocks.items()}

    def block(self, layer: int) -> LayerMemory:
        return self.blocks[str(layer)]
