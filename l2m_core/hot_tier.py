"""The hot tier: decoded block tensors on the model's device, within a byte budget, least recently used out.

Keys are `(block_id, layer)`. Hits and misses are counted so a
session can report its hit rate.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class HotTier:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._entries

    def get(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[int, int], k: torch.Tensor, v: torch.Tensor) -> None:
        if key in self._entries:
            return
        self._entries[key] = (k, v)
        self.used += _nbytes(k, v)
        self._evict()

    def discard_blocks(self, block_ids: set[int]) -> None:
        for key in [key for key in self._entries if key[0] in block_ids]:
            self.used -= _nbytes(*self._entries.pop(key))

    def _evict(self) -> None:
        while self.used > self.budget and self._entries:
            self.used -= _nbytes(*self._entries.popitem(last=False)[1])

    def stats(self) -> dict:
        lookups = self.hits + self.misses
        return {"entries": len(self._entries), "bytes": self.used, "budget": self.budget, "hits": self.hits,
                "misses": self.misses, "hit_rate": self.hits / lookups if lookups else None}


def _nbytes(k: torch.Tensor, v: torch.Tensor) -> int:
    return k.numel() * k.element_size() + v.numel() * v.element_size()
