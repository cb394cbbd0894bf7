"""Cold-tier compression of one block's keys or values, `[tokens, heads, dim]`.

int8 and int4 use one fp16 scale per channel (head, dim) over the block's tokens, symmetric around 0:
keys have outlier channels, which a per-channel scale absorbs. fp16 is the near-lossless option and
fp32 the exact one (used to check the read path against the plain model).
"""

from __future__ import annotations

import numpy as np
import torch

_LEVELS = {"int8": 127, "int4": 7}
_FLOATS = {"fp16": np.float16, "fp32": np.float32}


def encode(x: torch.Tensor, codec: str) -> bytes:
    return encode_layers(x[None], codec)[0]


def encode_layers(x: torch.Tensor, codec: str) -> list[bytes]:
    """`encode` of each `x[i]` (`[layers, tokens, heads, dim]`), computed for all layers at once: the same
    bytes as one call per layer, with one set of tensor operations instead of one per layer."""
    x = x.detach().to("cpu", torch.float32)
    if codec in _FLOATS:
        return [layer.tobytes() for layer in x.numpy().astype(_FLOATS[codec])]
    levels = _LEVELS[codec]
    scale = (x.abs().amax(dim=1, keepdim=True) / levels).clamp_min(1e-8).to(torch.float16)
    q = torch.round(x / scale.float()).clamp(-levels, levels).to(torch.int8).numpy()
    scales = scale.numpy()
    if codec == "int8":
        return [s.tobytes() + layer.tobytes() for s, layer in zip(scales, q, strict=True)]
    flat = (q.reshape(len(q), -1) + 8).astype(np.uint8)
    if flat.shape[1] % 2:
        flat = np.concatenate([flat, np.full((len(flat), 1), 8, np.uint8)], axis=1)
    packed = flat[:, 0::2] | (flat[:, 1::2] << 4)
    return [s.tobytes() + layer.tobytes() for s, layer in zip(scales, packed, strict=True)]


def decode(blob: bytes, shape: tuple[int, int, int], codec: str) -> torch.Tensor:
    tokens, heads, dim = shape
    if codec in _FLOATS:
        return torch.from_numpy(np.frombuffer(blob, _FLOATS[codec]).reshape(shape).astype(np.float32))
    n_scale = heads * dim * 2
    scale = torch.from_numpy(np.frombuffer(blob[:n_scale], np.float16).reshape(heads, dim).astype(np.float32))
    raw = np.frombuffer(blob[n_scale:], np.uint8 if codec == "int4" else np.int8)
    if codec == "int4":
        raw = np.stack([raw & 0x0F, raw >> 4], axis=1).reshape(-1)[: tokens * heads * dim].astype(np.int16) - 8
    return torch.from_numpy(raw.reshape(shape).astype(np.float32)) * scale


def encoded_size(shape: tuple[int, int, int], codec: str) -> int:
    tokens, heads, dim = shape
    n = tokens * heads * dim
    return {"fp32": 4 * n, "fp16": 2 * n, "int8": 2 * heads * dim + n, "int4": 2 * heads * dim + (n + 1) // 2}[codec]
