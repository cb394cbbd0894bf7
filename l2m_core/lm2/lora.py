"""Low-rank adapters on a frozen base's linear layers, attached by forward hooks (no module surgery).

`out = W x + (B A x) * alpha / rank`, with B zero-initialised so a fresh adapter changes nothing. The
base's module tree and state dict stay untouched, so `save_pretrained` and the fingerprint still work.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "v_proj")


class LoRA(nn.Module):
    def __init__(self, base: nn.Module, rank: int, targets: tuple[str, ...] = DEFAULT_TARGETS, alpha: float = 16.0):
        super().__init__()
        self.rank, self.targets, self.scale = rank, tuple(targets), alpha / rank
        self.down = nn.ParameterDict()
        self.up = nn.ParameterDict()
        self._modules_by_key: dict[str, nn.Linear] = {}
        for name, module in base.named_modules():
            if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in self.targets:
                key = name.replace(".", "__")
                kw = {"device": module.weight.device, "dtype": module.weight.dtype}
                down = torch.empty(rank, module.in_features, **kw)
                nn.init.kaiming_uniform_(down, a=math.sqrt(5))
                self.down[key] = nn.Parameter(down)
                self.up[key] = nn.Parameter(torch.zeros(module.out_features, rank, **kw))
                self._modules_by_key[key] = module
        if not self._modules_by_key:
            raise ValueError(f"no linear layers named {', '.join(self.targets)} in the base model")
        self._handles = []

    def attach(self) -> None:
        self.detach()
        for key, module in self._modules_by_key.items():
            self._handles.append(module.register_forward_hook(self._hook(key)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, key: str):
        def hook(module, args, output):
            return output + (args[0] @ self.down[key].T @ self.up[key].T) * self.scale
        return hook
