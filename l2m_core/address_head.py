"""A learned addressing head: which memory blocks a question needs, scored from the model's own keys.

Why: BM25 over block text finds a needle only when the question shares its words; the model's raw
key scores (DESIGN.md s4) find it about a third of the time in natural text. The head learns, from
retrieval supervision (training/address.py), a small bilinear form per (layer, KV head) between the
question's keys and each block's representative keys (`ReprBank`, already in RAM), so it costs one
forward pass over the question and no cold-tier reads.

    score(block) = sum over chosen layers l and KV heads h of  w[l,h] * smoothmax over (t, j) of
                   (alpha[l,h] * q_t . k_j  +  (U[l,h] q_t + b[l,h]) . (V[l,h] k_j)) / sqrt(head_dim)

`q_t` are the un-rotated keys of the question's tokens (recorded with `RecordPlan`, the path ingest
uses), `k_j` a block's representative keys. `V` starts at zero and `alpha`, `w` at one, and an untrained
head pools with a hard max (`temperature` 0), so an untrained head *is* plain key-key maxima scoring;
training sets a temperature (a logsumexp, so every pair gets gradient) and learns the low-rank
correction. The engine fuses the head's ranking with BM25's by reciprocal rank (`fused_top`).

Saved as `address_head.safetensors` + `address_head.json` with the base model's fingerprint; loading it
onto another model is refused (its projections were trained on that model's keys).

Measured (bench/bench_address_head.py, default model, held-apart samples; bench/results/address_head.json):
fused with BM25, a trained head raises recall@1 over BM25 alone from .30 to .64 on bAbI facts and from .17
to .33 on paraphrased pass keys. Much of that is "which block looks inserted into the novel": in a store
holding 9 samples' documents the head puts the asked sample's fact above the other samples' facts 2 to
2.6 times as often as a question-blind ranking would, but BM25 does far better where names are shared (bAbI).
Fusion therefore keeps BM25 in charge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from l2m_core.addressing import rrf
from l2m_core.attention import RecordPlan, record
from l2m_core.errors import L2MError
from l2m_core.loading import check_base, fingerprint, kv_geometry, read_trained_config

if TYPE_CHECKING:
    from l2m_core.memory import Memory

FORMAT, VERSION = "l2m-address-head", 1
WEIGHTS, CONFIG = "address_head.safetensors", "address_head.json"
QUESTION_PREFIX = "Question: "  # encoded before the question so its first word is not the attention sink


def evenly_spaced(num_layers: int, count: int) -> list[int]:
    """`count` layer indices spread from the first to the last layer."""
    count = max(1, min(count, num_layers))
    return sorted({round(i * (num_layers - 1) / max(count - 1, 1)) for i in range(count)})


class AddressHead(nn.Module):
    def __init__(self, layers: Sequence[int], kv_heads: int, head_dim: int, rank: int = 32,
                 temperature: float = 0.0, seed: int = 0):
        super().__init__()
        self.layers, self.kv_heads, self.head_dim, self.rank = list(layers), kv_heads, head_dim, rank
        self.temperature = temperature                    # 0: hard max (the untrained, key-key baseline)
        self.base: dict = {}                              # name / fingerprint of the model it was trained on
        n = len(self.layers)
        gen = torch.Generator().manual_seed(seed)
        self.alpha = nn.Parameter(torch.ones(n, kv_heads))   # weight of the plain key-key product
        self.weight = nn.Parameter(torch.ones(n, kv_heads))  # weight of each (layer, head) in the block score
        self.u = nn.Parameter(torch.randn(n, kv_heads, head_dim, rank, generator=gen) / math.sqrt(head_dim))
        self.v = nn.Parameter(torch.zeros(n, kv_heads, head_dim, rank))
        self.b = nn.Parameter(torch.zeros(n, kv_heads, rank))

    @classmethod
    def for_model(cls, model, layers: int | Sequence[int] = 6, rank: int = 32, seed: int = 0) -> AddressHead:
        """An untrained head for `model` over the given layers, or that many evenly spaced ones."""
        cfg = model.config
        kv_heads, head_dim = kv_geometry(cfg)
        if isinstance(layers, int):
            layers = evenly_spaced(cfg.num_hidden_layers, layers)
        bad = [layer for layer in layers if not 0 <= layer < cfg.num_hidden_layers]
        if bad or not layers:
            raise L2MError(f"address head layers {list(layers)} do not fit a model of {cfg.num_hidden_layers} layers")
        return cls(sorted(set(layers)), kv_heads, head_dim, rank, seed=seed)

    def config(self) -> dict:
        return {"layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim, "rank": self.rank,
                "temperature": self.temperature}

    # ---- scoring -----------------------------------------------------------------------------------

    def scores(self, question: torch.Tensor, bank: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Block scores. `question`: keys `[S, Hkv, T, D]` (or a batch `[B, S, Hkv, T, D]`, padded tokens
        False in `mask [B, T]`); `bank`: representative keys of the chosen layers `[S, N, r, Hkv, D]`.
        Returns `[N]` (or `[B, N]`)."""
        single = question.dim() == 4
        q = question[None] if single else question
        if q.shape[1:3] != (len(self.layers), self.kv_heads) or q.shape[-1] != self.head_dim or \
                bank.shape[0] != len(self.layers) or bank.shape[3:] != (self.kv_heads, self.head_dim):
            raise L2MError(f"address head shape (layers {len(self.layers)}, kv heads {self.kv_heads}, dim "
                           f"{self.head_dim}) does not fit keys {tuple(q.shape[1:])} / {tuple(bank.shape)}")
        q = q.to(self.u.dtype)
        qp = torch.einsum("bshtd,shdr->bshtr", q, self.u) + self.b[None, :, :, None]
        out = []
        for part in torch.split(bank, 1024, dim=1):  # bounded memory on large stores
            k = part.to(self.u.dtype)
            kp = torch.einsum("snjhd,shdr->snjhr", k, self.v)
            s = (torch.einsum("bshtd,snjhd->bsnhtj", q, k) * self.alpha[None, :, None, :, None, None]
                 + torch.einsum("bshtr,snjhr->bsnhtj", qp, kp)) / math.sqrt(self.head_dim)
            if mask is not None:
                s = s.masked_fill(~mask[:, None, None, None, :, None], float("-inf"))
            s = s.flatten(-2)
            pooled = s.amax(-1) if self.temperature <= 0 else \
                self.temperature * torch.logsumexp(s / self.temperature, dim=-1)  # [B, S, n, Hkv]
            out.append((pooled * self.weight[None, :, None, :]).sum(dim=(1, 3)))
        result = torch.cat(out, dim=1)
        return result[0] if single else result

    def question_keys(self, memory: Memory, text: str) -> torch.Tensor:
        """Un-rotated keys `[S, Hkv, T, D]` of `text`'s tokens in the chosen layers."""
        return question_keys(memory.model, memory.rotary, memory.tokenizer, text, self.layers)

    @torch.no_grad()
    def ranking(self, memory: Memory, query: str) -> list[int]:
        """Every block of `memory`, best first by this head."""
        if not len(memory.reprs):
            return []
        ids, stack = memory.reprs.stacked()
        scores = self.scores(self.question_keys(memory, query), stack[self.layers])
        return [ids[i] for i in torch.argsort(scores, descending=True, stable=True).tolist()]

    def fused_top(self, memory: Memory, query: str, k: int) -> list[int]:
        """The `k` best blocks by reciprocal rank fusion of BM25's ranking and this head's (the engine's
        shared read set uses them where it would use BM25's top-k alone)."""
        return fuse_rankings(memory.lexical.top(query, 2 * k), self.ranking(memory, query), 2 * k)[:k]

    # ---- saving ------------------------------------------------------------------------------------

    def save(self, directory: str | Path, model=None, base_name: str = "", **extra) -> Path:
        """Write weights and config to `directory` (which may also hold an LM2 adapter); return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if model is not None:
            self.base = {"name": base_name, "fingerprint": fingerprint(model), "model_type": model.config.model_type}
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS))
        config = {"format": FORMAT, "version": VERSION, **self.config(), "base": self.base, **extra}
        (directory / CONFIG).write_text(json.dumps(config, indent=2))
        return directory


def fuse_rankings(lexical: list[int], learned: list[int], pool: int) -> list[int]:
    """BM25's and the head's rankings fused by reciprocal rank, each cut to its first `pool` entries.
    Keep `pool` small against the store (the engine: twice the blocks it keeps): RRF rewards blocks found
    by both rankings, and deep lists overlap by chance (two top-32s of 130 blocks share ~8), so chance
    agreement would outrank either ranking's best block."""
    return rrf([lexical[:pool], learned[:pool]])


def question_keys(model, rotary, tokenizer, text: str, layers: Sequence[int]) -> torch.Tensor:
    """Run `QUESTION_PREFIX + text` through the model alone (as ingest runs a chunk) and return the
    un-rotated keys of `text`'s tokens in `layers`: `[S, Hkv, T, D]`, float32 on the CPU."""
    prefix = tokenizer(QUESTION_PREFIX, add_special_tokens=False)["input_ids"]
    ids = prefix + tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
    if len(ids) == len(prefix):
        raise L2MError("the question is empty")
    device = next(model.parameters()).device
    positions = torch.arange(len(ids), device=device)
    plan = record(model, torch.tensor([ids], device=device), RecordPlan(rotary, None, None, positions),
                  max(layers) + 1)
    return torch.stack([plan.keys[layer][0, :, len(prefix):] for layer in layers]).float().cpu()


def read_config(path: str | Path) -> tuple[Path, dict]:
    """The head's directory and JSON; `path` is the directory or one of its two files."""
    return read_trained_config(path, WEIGHTS, CONFIG, FORMAT, VERSION, "address head", "address-head")


def load_address_head(path: str | Path, model) -> AddressHead:
    """Load the head at `path` for `model`, refusing a model other than the one it was trained on."""
    directory, config = read_config(path)
    check_base(config.get("base", {}), model, f"address head {directory}")
    head = AddressHead(config["layers"], config["kv_heads"], config["head_dim"], config["rank"],
                       config["temperature"])
    head.base = config["base"]
    try:
        head.load_state_dict(load_file(str(directory / WEIGHTS)))
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise L2MError(f"cannot read {directory / WEIGHTS}: {str(exc).splitlines()[0]}") from exc
    return head.eval().requires_grad_(False)
