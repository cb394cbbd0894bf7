"""Retrieval supervision for the address head: needle samples' key features, InfoNCE training, recall@k.

A sample (built in `data.py`) is a short document (a novel passage with a needle inserted) and a question
whose answer is the needle. Ingesting it into a store that already holds a novel haystack gives the
candidates: every block of the store; the positives are the block(s) holding a supporting fact. Two families:

- `passkey`: a code, number or word stated with one wording and asked with another ("The combination that
  unlocks the vault is 4417." / "What number opens the safe?"), so BM25 has little to match;
- `babi`: a bAbI qa1 story's latest facts scattered through the passage ("Daniel went to the garden." /
  "Where is Daniel?"); the other facts are distractors.

Train and test use disjoint templates, disjoint bAbI stories (the train and test files) and different
novels, so test recall is measured on held-apart samples. Features (question keys, representative keys)
are computed once; training then runs on them alone, in seconds to minutes on a CPU.
"""

from __future__ import annotations

import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from l2m_core.address_head import AddressHead, fuse_rankings
from l2m_core.addressing import LexicalIndex
from l2m_core.errors import L2MError
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings
from l2m_core.training.data import NeedleSample, default_data_dir, make_samples, read_novel


@dataclass
class Example:
    """One sample's features: its question's keys, its own blocks' representative keys, which are positive."""
    question_keys: torch.Tensor       # [S, Hkv, T, D]
    blocks: torch.Tensor              # [n, S, r, Hkv, D] the sample document's blocks
    positives: list[int]              # indices into `blocks`
    texts: list[str]                  # block texts (for BM25 in the benchmark)
    question: str = ""
    family: str = ""
    kind: str = ""


@dataclass
class HaystackBlocks:
    """The blocks every sample competes with: `[N, S, r, Hkv, D]` and their texts."""
    blocks: torch.Tensor
    texts: list[str] = field(default_factory=list)


# ---- features ---------------------------------------------------------------------------------------

def ingest_haystack(memory: Memory, novel: str, tokens: int, part_tokens: int = 512, skip: int = 2000) -> None:
    """The first `tokens` tokens of `novel` after `skip` characters, as documents of `part_tokens` tokens."""
    ids = memory.tokenizer(novel[skip:], add_special_tokens=False)["input_ids"][:tokens]
    for i in range(0, len(ids), part_tokens):
        memory.ingest_document(memory.tokenizer.decode(ids[i:i + part_tokens]), f"haystack/{i // part_tokens:04d}")


def haystack_features(memory: Memory, head: AddressHead) -> HaystackBlocks:
    ids, stack = memory.reprs.stacked()
    return HaystackBlocks(stack[head.layers].transpose(0, 1).contiguous(), [memory.block_text(b) for b in ids])


def example(memory: Memory, head: AddressHead, sample: NeedleSample, source: str = "sample",
            keep: bool = False) -> tuple[Example, list[int]]:
    """Ingest the sample's document, read its blocks' features and which hold the support; retire the
    document unless `keep`. Returns the example and the document's block ids."""
    spans = memory.ingest_document(sample.document, source)
    block_ids = [s.block_id for s in spans]
    try:
        metas = [memory.meta[b] for b in block_ids]
        positives = [i for i, m in enumerate(metas)
                     if any(m.char_start < end and start < m.char_end for start, end in sample.support)]
        blocks = torch.stack([memory.reprs[b][head.layers] for b in block_ids])
        texts = [sample.document[m.char_start:m.char_end] for m in metas]
        keys = head.question_keys(memory, sample.question).half()
    finally:
        if not keep:
            memory.retire_document(source)
    return Example(keys, blocks, positives, texts, sample.question, sample.family, sample.kind), block_ids


def features(memory: Memory, head: AddressHead, samples: list[NeedleSample],
             progress: Callable[[int, int], None] | None = None) -> list[Example]:
    out = []
    for i, sample in enumerate(samples):
        out.append(example(memory, head, sample)[0])
        if progress:
            progress(i + 1, len(samples))
    return out


# ---- training and evaluation ------------------------------------------------------------------------

def _batch(examples: list[Example], haystack: HaystackBlocks, shared_store: bool = False) -> tuple:
    """Question keys `[B, S, H, T, D]`, their mask `[B, T]`, one candidate bank (haystack, then every
    example's own blocks) and per example the allowed candidates and the positive ones, `[B, N]` each.
    With `shared_store`, the batch's documents sit in one store: another example's blocks are negatives
    too (other needles: the head must read the question), unless they could answer it (`unrelated`)."""
    width = max(e.question_keys.shape[2] for e in examples)
    s, h, _, d = examples[0].question_keys.shape
    q = torch.zeros(len(examples), s, h, width, d)
    mask = torch.zeros(len(examples), width, dtype=torch.bool)
    for i, e in enumerate(examples):
        q[i, :, :, :e.question_keys.shape[2]] = e.question_keys.float()
        mask[i, :e.question_keys.shape[2]] = True
    own = torch.cat([e.blocks for e in examples]).transpose(0, 1)
    bank = torch.cat([haystack.blocks.transpose(0, 1), own], dim=1)
    n_hay, total = haystack.blocks.shape[0], bank.shape[1]
    allowed = torch.zeros(len(examples), total, dtype=torch.bool)
    positive = torch.zeros_like(allowed)
    allowed[:, :n_hay] = True
    starts = [n_hay + sum(len(e.blocks) for e in examples[:i]) for i in range(len(examples))]
    for i, e in enumerate(examples):
        for j, other in enumerate(examples):
            if j == i or (shared_store and unrelated(other, e.question)):
                allowed[i, starts[j]:starts[j] + len(other.blocks)] = True
        positive[i, [starts[i] + j for j in e.positives]] = True
    return q, mask, bank, allowed, positive


def unrelated(other: Example, question: str) -> bool:
    """Whether `other`'s document is a fair distractor for `question`: it asks something else and names none
    of the question's names (bAbI stories share their characters: another story's "Daniel went to the
    garden." answers "Where is Daniel?" as well as the right one would)."""
    names = {w for w in re.findall(r"[A-Za-z]+", question)[1:] if w[0].isupper()}
    return other.question != question and not any(re.search(rf"\b{n}\b", t) for n in names for t in other.texts)


def info_nce(scores: torch.Tensor, allowed: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """-log of the softmax mass on the positive blocks, over each example's allowed candidates."""
    all_ = scores.masked_fill(~allowed, float("-inf")).logsumexp(-1)
    pos = scores.masked_fill(~positive, float("-inf")).logsumexp(-1)
    return (all_ - pos).mean()


def train(head: AddressHead, examples: list[Example], haystack: HaystackBlocks, steps: int = 300,
          batch_size: int = 16, lr: float = 3e-3, temperature: float = 1.0, weight_decay: float = 0.01, seed: int = 0,
          time_budget: float | None = None, progress: Callable[[dict], None] | None = None,
          shared_store: bool = True) -> dict:
    """InfoNCE over candidate blocks: positives are the blocks holding a supporting fact, negatives every
    other block of the store: the haystack, the rest of the sample's document and, with `shared_store`, the
    batch's other documents. Without those a head can score well by spotting which block was inserted into
    the novel; with them it has to tell one inserted needle from another by the question. Returns a
    summary."""
    usable = [e for e in examples if e.positives]
    if not usable:
        raise L2MError("no training example has a block holding its supporting fact")
    rng = random.Random(seed)
    head.temperature = temperature
    with torch.no_grad():  # InfoNCE wants logits of order one; raw sums of key maxima spread blocks by tens
        q, mask, bank, allowed, _ = _batch(rng.sample(usable, min(64, len(usable))), haystack)
        scores = head.scores(q, bank, mask)
        mean = scores.masked_fill(~allowed, 0).sum(-1, keepdim=True) / allowed.sum(-1, keepdim=True)
        head.weight /= (scores - mean)[allowed].std().clamp_min(1e-6)  # a scale: the ranking is unchanged
    head.train().requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    start, loss_avg, step = time.perf_counter(), None, 0
    for step in range(1, steps + 1):
        batch = rng.sample(usable, min(batch_size, len(usable)))
        q, mask, bank, allowed, positive = _batch(batch, haystack, shared_store)
        loss = info_nce(head.scores(q, bank, mask), allowed, positive)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.9 * loss_avg + 0.1 * loss.item()
        if progress and (step % 50 == 0 or step == steps):
            progress({"event": "train", "step": step, "loss": round(loss_avg, 4),
                      "seconds": round(time.perf_counter() - start, 1)})
        if time_budget is not None and time.perf_counter() - start > time_budget:
            break
    head.eval().requires_grad_(False)
    return {"steps": step, "loss": round(loss_avg or 0.0, 4), "seconds": round(time.perf_counter() - start, 1),
            "examples": len(usable)}


def distractors(examples: list[Example], i: int, count: int) -> list[int]:
    """`count` other examples (the next ones, cyclically) that are `unrelated` to example i's question: their
    documents join i's store as distractors (another needle, other facts) without making it ambiguous."""
    others = [j % len(examples) for j in range(i + 1, i + len(examples))]
    return [j for j in others if unrelated(examples[j], examples[i].question)][:count]


def candidates(examples: list[Example], haystack: HaystackBlocks, i: int,
               extra: int = 0) -> tuple[torch.Tensor, list]:
    """Example i's candidate blocks `[N, S, r, Hkv, D]` and texts: the haystack (indices `0..H-1`), its own
    document (`H..`), then the documents of `extra` distractor examples."""
    docs = [examples[i], *(examples[j] for j in distractors(examples, i, extra))]
    return (torch.cat([haystack.blocks, *(e.blocks for e in docs)]),
            haystack.texts + [t for e in docs for t in e.texts])


@torch.no_grad()
def head_rankings(head: AddressHead, examples: list[Example], haystack: HaystackBlocks,
                  extra: int = 0) -> list[list[int]]:
    """Per example, candidate indices best first (see `candidates`)."""
    out = []
    for i, e in enumerate(examples):
        bank = candidates(examples, haystack, i, extra)[0].transpose(0, 1)
        scores = head.scores(e.question_keys.float(), bank)
        out.append(torch.argsort(scores, descending=True, stable=True).tolist())
    return out


def bm25_rankings(examples: list[Example], haystack: HaystackBlocks, extra: int = 0) -> list[list[int]]:
    """Per example, BM25's candidate indices best first (only blocks sharing a word with the question)."""
    out = []
    for i, e in enumerate(examples):
        index = LexicalIndex()
        texts = candidates(examples, haystack, i, extra)[1]
        for j, text in enumerate(texts):
            index.add(j, text, "")
        out.append(index.top(e.question, len(texts)))
    return out


def positives(examples: list[Example], haystack: HaystackBlocks) -> list[set[int]]:
    n = haystack.blocks.shape[0]
    return [{n + j for j in e.positives} for e in examples]


def recall_at(rankings: list[list[int]], wanted: list[set[int]], ks: tuple[int, ...] = (1, 2, 4, 8)) -> dict:
    """Share of examples with a positive block among the first k of its ranking (examples without a
    positive count as misses, so no sample is silently dropped)."""
    n = max(1, len(rankings))
    return {f"@{k}": round(sum(bool(set(r[:k]) & w) for r, w in zip(rankings, wanted, strict=True)) / n, 4)
            for k in ks}


def rankings(examples: list[Example], haystack: HaystackBlocks, heads: dict[str, AddressHead], extra: int = 0,
             fusion_pool: int = 8) -> dict[str, list[list[int]]]:
    """Per method, per example, candidate indices best first: `bm25`, each head by its name, and each head
    fused with BM25 as the engine fuses them as `fused_<name>` (`fusion_pool`: twice the engine's
    `lexical_top_k`). With `extra`, each store also holds that many other samples' documents."""
    lexical = bm25_rankings(examples, haystack, extra)
    methods = {"bm25": lexical}
    for name, head in heads.items():
        ranked = head_rankings(head, examples, haystack, extra)
        methods[name] = ranked
        methods[f"fused_{name}"] = [fuse_rankings(a, b, fusion_pool) for a, b in zip(lexical, ranked, strict=True)]
    return methods


def evaluate(examples: list[Example], haystack: HaystackBlocks, heads: dict[str, AddressHead],
             ks: tuple[int, ...] = (1, 2, 4, 8), extra: int = 0, fusion_pool: int = 8,
             groups: str = "family") -> dict:
    """Recall@k per group (`family` or `kind`, and `all`) for each method of `rankings`. With `extra`,
    each store also holds that many other samples' documents (other needles and facts)."""
    methods = rankings(examples, haystack, heads, extra, fusion_pool)
    wanted = positives(examples, haystack)
    out: dict = {}
    for group in sorted({getattr(e, groups) for e in examples}) + ["all"]:
        rows = [i for i, e in enumerate(examples) if group in ("all", getattr(e, groups))]
        out[group] = {"samples": len(rows)} | {
            name: recall_at([ranked[i] for i in rows], [wanted[i] for i in rows], ks)
            for name, ranked in methods.items()}
    return out


def scratch_store(directory: Path, lm, novel: str, haystack_tokens: int) -> Memory:
    """A store holding `haystack_tokens` tokens of the novel (default settings), for collecting features."""
    memory = Memory.create(directory, lm, MemorySettings())
    ingest_haystack(memory, novel, haystack_tokens)
    return memory


def train_address_head(lm, out_dir: str | Path, per_family: int = 120, eval_per_family: int = 0,
                       haystack_tokens: int = 8192, doc_tokens: int = 192, layers: int | list[int] = 6,
                       rank: int = 32,
                       steps: int = 300, batch_size: int = 16, lr: float = 3e-3, temperature: float = 1.0,
                       seed: int = 0, time_budget: float | None = None, data_dir: Path | None = None,
                       progress: Callable[[dict], None] | None = None) -> dict:
    """The whole recipe behind `l2m train --task address-head`: features from a scratch store of the
    training novel, InfoNCE training, save to `out_dir`; with `eval_per_family`, recall@k on held-apart
    samples (other templates, bAbI test stories, the other novel). Returns a summary."""
    data_dir = data_dir or default_data_dir()
    note = progress or (lambda event: None)
    head = AddressHead.for_model(lm.model, layers, rank, seed=seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="l2m-address-") as tmp:
        memory = scratch_store(Path(tmp) / "train", lm, read_novel(data_dir, "train"), haystack_tokens)
        try:
            hay = haystack_features(memory, head)
            samples = make_samples("train", per_family, lm.tokenizer, doc_tokens, seed, data_dir)
            examples = features(memory, head, samples,
                                lambda i, n: i % 20 == 0 and note({"event": "data", "samples": f"{i}/{n}"}))
        finally:
            memory.close()
        collected = time.perf_counter() - start
        summary = train(head, examples, hay, steps, batch_size, lr, temperature, seed=seed, time_budget=time_budget,
                        progress=note)
        summary |= {"feature_seconds": round(collected, 1), "haystack_blocks": hay.blocks.shape[0]}
        if eval_per_family:
            memory = scratch_store(Path(tmp) / "test", lm, read_novel(data_dir, "test"), haystack_tokens)
            try:
                test_hay = haystack_features(memory, head)
                test = features(memory, head, make_samples("test", eval_per_family, lm.tokenizer, doc_tokens, seed,
                                                           data_dir))
            finally:
                memory.close()
            untrained = AddressHead(head.layers, head.kv_heads, head.head_dim, rank, seed=seed)
            summary["held_apart"] = evaluate(test, test_hay, {"untrained": untrained, "head": head})
    head.save(out_dir, lm.model, lm.name, training=summary)
    return summary
