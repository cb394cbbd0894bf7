"""The attention hook: every layer of the frozen model attends to one compact virtual sequence.

`l2m_attention` is registered with transformers' `AttentionInterface` under the name "l2m". While a
plan is active (a context variable set by the engine) each layer hands its rotated queries, keys and
values to the plan, which splices in what that layer may see; with no plan active the model behaves
exactly as with "sdpa" (or eager attention, for soft-capped families). No model file is forked. Family
differences (scaling, soft-capping, sliding windows) arrive as `families.LayerTraits`; masks come from the
positions keys were rotated to, so a sliding window holds in the virtual sequence as in the plain model.

Plans:
- `RecordPlan` (ingest, and the prompt head of a read): attend to `[prefix | current]`, where the prefix is
  the document's sink and local window, and record the current tokens' un-rotated keys and values.
- `ReadPlan` (a question and every generated token): on its first call a layer chooses its read set,
  rotates those blocks' keys to positions just before the question, and keeps
  `[prompt head | read blocks | question and answer so far]` as its cache.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from l2m_core.families import LayerTraits, layer_traits
from l2m_core.rope import Rotary

_ACTIVE: ContextVar[object | None] = ContextVar("l2m_plan", default=None)


def l2m_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    traits = layer_traits(module, scaling, kwargs)
    plan = _ACTIVE.get()
    if plan is None:
        if traits.softcap is None:
            return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                          dropout=dropout, **kwargs)
        return _softcapped(query, key, value, attention_mask, traits), None
    out = plan.attend(module.layer_idx, query, key, value, traits)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register("l2m", l2m_attention)
AttentionMaskInterface.register("l2m", sdpa_mask)  # plain use gets the masks SDPA gets (padding, sliding windows)


def _softcapped(query, key, value, attention_mask, traits: LayerTraits) -> torch.Tensor:
    """Plain attention for soft-capped families (SDPA cannot cap logits), any batch; `attention_mask` is SDPA's
    boolean mask, an additive float mask passed by the caller, or None for plain causal attention."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = traits.logits(query @ key.transpose(2, 3))
    if attention_mask is None:
        q_len, total = scores.shape[-2:]
        attention_mask = torch.ones(q_len, total, dtype=torch.bool, device=query.device).tril(total - q_len)
    if attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask
    return (scores.softmax(dim=-1).to(value.dtype) @ value).transpose(1, 2).contiguous()


@contextmanager
def active(plan):
    token = _ACTIVE.set(plan)
    try:
        yield plan
    finally:
        _ACTIVE.reset(token)


def attend_over(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, traits: LayerTraits,
                visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One softmax over `keys`, each query row seeing the keys `visible[q, T]` marks.

    Shapes: query `[1, Hq, q, D]`, keys/values `[1, Hkv, T, D]` (grouped-query heads share a KV head).
    Returns the output `[1, Hq, q, D]` and the probabilities `[Hkv, group, q, T]`.
    """
    _, n_heads, q_len, dim = query.shape
    kv_heads = keys.shape[1]
    q = query[0].reshape(kv_heads, n_heads // kv_heads, q_len, dim)
    scores = traits.logits(torch.einsum("kgqd,ktd->kgqt", q, keys[0]))
    probs = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    out = torch.einsum("kgqt,ktd->kgqd", probs.to(values.dtype), values[0])
    return out.reshape(1, n_heads, q_len, dim), probs


def received_attention(query: torch.Tensor, keys: torch.Tensor, traits: LayerTraits, visible: torch.Tensor,
                       stride: int = 32) -> torch.Tensor:
    """Mean attention each of the queries' own tokens (the last `q` keys) receives from the queries that see it:
    `[Hkv, q]`.

    Only every `stride`-th query row (ending at the last) is scored: this ranks keys for representatives,
    and the full probability matrix would cost as much as the attention itself. Per layer of a 512-token
    chunk on one CPU thread, every 8th row cost 5.0 ms, every 32nd 1.2 ms (the attention itself, with a
    320-token prefix: 13.4 ms); in a whole ingest, every 64th saved little more (small operations' overhead
    remains). Reading uses representatives only where asked for (`attention_top_k`, a learned address head).
    """
    _, n_heads, q_len, dim = query.shape
    kv_heads, total = keys.shape[1], keys.shape[2]
    rows = torch.arange(q_len - 1, -1, -stride, device=query.device)
    q = query[0][:, rows].reshape(kv_heads, n_heads // kv_heads, len(rows), dim)
    scores = traits.logits(torch.einsum("kgqd,ktd->kgqt", q, keys[0]))
    seen = visible[rows]                                                           # [rows, T]
    probs = scores.masked_fill(~seen, float("-inf")).softmax(dim=-1)[..., total - q_len:]
    seen_by = seen[:, total - q_len:].sum(dim=0)
    return probs.sum(dim=(1, 2)) / seen_by.clamp(min=1)


class RecordPlan:
    """Attend to a fixed prefix plus the current tokens; record the current un-rotated keys and values.

    `prefix_k[layer]` holds keys already rotated to positions 0..n-1 (a document's prefix is the same for
    many chunks, so it is turned once), `positions` the current tokens'. With `track_received`, also records
    the attention each current key received (for representative keys). Run it with `record`.
    """

    def __init__(self, rotary: Rotary, prefix_k: list[torch.Tensor] | None, prefix_v: list[torch.Tensor] | None,
                 positions: torch.Tensor, track_received: bool = False):
        self.rotary, self.positions, self.track_received = rotary, positions, track_received
        self.prefix_k, self.prefix_v = prefix_k, prefix_v
        self.last_layer: int | None = None  # `record` stops the pass once this layer is recorded
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.received: dict[int, torch.Tensor] = {}
        self._layouts: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def attend(self, layer, query, key, value, traits: LayerTraits):
        n = self.prefix_k[layer].shape[2] if self.prefix_k is not None else 0
        visible, additive = self._layout(n, traits, query)
        keys, values = key, value
        if n:
            keys, values = torch.cat([self.prefix_k[layer], key], dim=2), torch.cat([self.prefix_v[layer], value], 2)
        if traits.softcap is not None:
            out = attend_over(query, keys, values, traits, visible)[0]
        else:  # a plain causal chunk (no prefix, no window) needs no mask: SDPA's causal kernel, the same output
            out = F.scaled_dot_product_attention(query, keys, values, attn_mask=additive, is_causal=additive is None,
                                                 scale=traits.scaling, enable_gqa=True)
        self.keys[layer] = self.rotary.unrotate(key, self.positions, layer)
        self.values[layer] = value
        if self.track_received:
            self.received[layer] = received_attention(query, keys, traits, visible)
        if layer == self.last_layer:
            raise _Recorded
        return out

    def _layout(self, n_prefix: int, traits: LayerTraits, query: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The visibility mask `[q, T]` and the same as SDPA's additive mask (0 where visible, -inf elsewhere:
        what SDPA makes of a boolean mask on every call, so the same output; None where SDPA's own causal
        mask is the same). They are the same in every layer with the same prefix length and window, so they
        are built once per pass."""
        key = (n_prefix, traits.window, query.dtype)
        if key not in self._layouts:
            before = torch.arange(n_prefix, device=query.device)
            visible = traits.visible(self.positions, torch.cat([before, self.positions]))
            additive = None
            if n_prefix or traits.window is not None:
                additive = torch.zeros(visible.shape, dtype=query.dtype, device=query.device)
                additive.masked_fill_(~visible, float("-inf"))
            self._layouts[key] = visible, additive
        return self._layouts[key]


class _Recorded(Exception):
    """Raised by a `RecordPlan` once its last layer is recorded, to end the forward pass there (`record`)."""


def record(model, ids: torch.Tensor, plan: RecordPlan, layers: int) -> RecordPlan:
    """Run `model` over `ids` (`[1, n]`, at the plan's positions) while `plan` records each layer's keys and
    values, and stop once layer `layers - 1` is recorded: what follows (that layer's attention output and
    MLP, the final norm, the logits) changes nothing recorded, and skipping it saves about 1/`layers` of
    the pass."""
    plan.last_layer = layers - 1
    with torch.inference_mode(), active(plan):
        try:
            model(ids, position_ids=plan.positions[None], use_cache=False, logits_to_keep=1)
        except _Recorded:
            pass
    return plan


class BatchPlan:
    """Rows of a batch, each read through its own `ReadPlan` (its own read set and positions): the model's
    projections and MLPs run once for the whole batch, attention row by row. Rows are right-padded; a row's
    tokens see only earlier ones, so its padding changes none of its outputs."""

    def __init__(self, plans: list[ReadPlan]):
        self.plans = plans

    def attend(self, layer, query, key, value, traits: LayerTraits):
        return torch.cat([plan.attend(layer, query[i:i + 1], key[i:i + 1], value[i:i + 1], traits)
                          for i, plan in enumerate(self.plans)])


@dataclass
class _LayerCache:
    keys: torch.Tensor                 # rotated, [1, Hkv, T, D]
    values: torch.Tensor
    positions: torch.Tensor            # [T]: the position each key was rotated to
    spans: list[tuple[int, int, int]]  # (block id, start, end) of read blocks inside `keys`
    mass: dict[int, float] = field(default_factory=dict)


class ReadPlan:
    """The read path: per-layer block selection on the first call, then a growing per-layer cache.

    `select(layer, query_raw)` returns block ids in reading order for that layer, given the un-rotated
    queries of the question tokens; `fetch(layer, ids)` returns their un-rotated keys and values.
    Read blocks end at position `memory_end`; the question starts there. When every layer reads the same
    blocks the engine sets `memory_end` to the head plus their tokens, so positions run on without a gap.
    """

    def __init__(self, rotary: Rotary, head_k: list[torch.Tensor], head_v: list[torch.Tensor],
                 select: Callable[[int, torch.Tensor], list[int]],
                 fetch: Callable[[int, list[int]], list[tuple[torch.Tensor, torch.Tensor]]],
                 memory_end: int, question: slice):
        self.rotary, self.select, self.fetch = rotary, select, fetch
        self.head_k, self.head_v = head_k, head_v
        self.memory_end, self.question = memory_end, question
        self.positions: torch.Tensor | None = None
        self.layers: dict[int, _LayerCache] = {}
        self.weigh_blocks = True  # count each block's attention mass (citations); training turns it off

    def attend(self, layer, query, key, value, traits: LayerTraits):
        cache = self.layers.get(layer) or self._open_layer(layer, query)
        keys = torch.cat([cache.keys, key], dim=2)
        values = torch.cat([cache.values, value], dim=2)
        positions = torch.cat([cache.positions, self.positions])
        out, probs = attend_over(query, keys, values, traits, traits.visible(self.positions, positions))
        rows = probs[:, :, -1:]  # mass is counted for the newest token: the prompt's last, then each generated one
        for block_id, start, end in cache.spans if self.weigh_blocks else ():
            cache.mass[block_id] = cache.mass.get(block_id, 0.0) + rows[..., start:end].sum().item() / (
                rows.shape[0] * rows.shape[1])
        cache.keys, cache.values, cache.positions = keys, values, positions
        return out

    def _open_layer(self, layer: int, query: torch.Tensor) -> _LayerCache:
        device = query.device
        q_raw = self.rotary.unrotate(query[:, :, self.question], self.positions[self.question], layer)
        ids = self.select(layer, q_raw)
        blocks = self.fetch(layer, ids) if ids else []
        n_head = self.head_k[layer].shape[2]
        cursor = self.memory_end - sum(k.shape[2] for k, _ in blocks)
        positions = [torch.arange(n_head, device=device)]
        parts_k = [self.rotary.rotate(self.head_k[layer], positions[0], layer)]
        parts_v = [self.head_v[layer]]
        spans, offset = [], n_head
        for block_id, (k_raw, v) in zip(ids, blocks, strict=True):
            n = k_raw.shape[2]
            positions.append(torch.arange(cursor, cursor + n, device=device))
            parts_k.append(self.rotary.rotate(k_raw, positions[-1], layer))
            parts_v.append(v)
            spans.append((block_id, offset, offset + n))
            cursor, offset = cursor + n, offset + n
        cache = _LayerCache(torch.cat(parts_k, dim=2), torch.cat(parts_v, dim=2), torch.cat(positions), spans)
        self.layers[layer] = cache
        return cache

    def read_set(self) -> dict[int, list[int]]:
        return {layer: [b for b, _, _ in c.spans] for layer, c in sorted(self.layers.items())}

    def block_mass(self) -> dict[int, float]:
        """Mean attention mass per block over layers (layers that did not read a block count 0)."""
        total: dict[int, float] = {}
        for cache in self.layers.values():
            for block_id, mass in cache.mass.items():
                total[block_id] = total.get(block_id, 0.0) + mass / len(self.layers)
        return total
