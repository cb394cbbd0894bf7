"""Addressing: which stored blocks a layer reads for a question.

Fused evidence (DESIGN.md s4): BM25 over each block's text and source path (shared by all layers),
the right neighbour of the best lexical blocks, blocks pinned by name, and each layer's own query-key
scores against the blocks' representative keys (token-level maxima per KV group, question tokens only).
The lexical picks come first because in natural text they find the needle where key scores alone
do not; key scores add a few blocks per layer on top, within the per-layer budget.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from itertools import islice

import snowballstemmer
import torch
from rank_bm25 import BM25Okapi

from l2m_core.store import BlockMeta

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_PARTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_STEMMER = snowballstemmer.stemmer("english")
# Words of a question that say nothing about where its answer is. BM25's idf does not drop them in code,
# where "which", "what" and "do" are rare enough to outweigh a content word.
_QUESTION_WORDS = frozenset(
    "a an the of in on at to for by with from and or is are was were be been it its this that these those which "
    "what who whom whose when where why how does do did can could should shall would will may might must not no "
    "any some all each there their them they he she his her as if than then so such into about over under "
    "between".split())


def _words(text: str) -> list[str]:
    """Lower-cased words; identifiers also yield their camelCase and snake_case parts."""
    out: list[str] = []
    for word in _WORD.findall(text):
        out.append(word.lower())
        parts = [p.lower() for p in _PARTS.findall(word)]
        if len(parts) > 1:
            out.extend(parts)
    return out


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """The snowball stem of a word, remembered: a corpus repeats its words, and stemming each occurrence
    took most of the time of indexing a block in RAM."""
    return _STEMMER.stemWord(word)


def terms(text: str, stemmed: bool = False) -> list[str]:
    """The words of a text as BM25 indexes them; `stemmed`: reduced to their stems ("normalises" and
    "normalize" meet)."""
    words = _words(text)
    return [_stem(w) for w in words] if stemmed else words


def query_terms(question: str, stemmed: bool = False) -> list[str]:
    """The terms of a question; `stemmed`: stems, without its question words."""
    if not stemmed:
        return _words(question)
    return [_stem(w) for w in _words(question) if w not in _QUESTION_WORDS]


class LexicalIndex:
    """BM25 over block texts and source paths, rebuilt lazily after blocks are added or removed. With
    `stemmed`, words are stemmed, question words dropped, and each block is also indexed under the name of
    the definition or section it lies in, where `labels` knows it (a function's body then matches the
    function's name, a paragraph its Article)."""

    def __init__(self, labels: Callable[[list[int]], dict[int, str]] | None = None, stemmed: bool = False):
        self.stemmed = stemmed
        self._docs: dict[int, list[str]] = {}
        self._bm25: BM25Okapi | None = None
        self._ids: list[int] = []
        self._indexed: list[list[str]] = []  # per id in `_ids`: its terms and its label's, as BM25 has them
        self._at: dict[int, int] = {}  # id -> its place in `_ids`
        self.labels = labels

    def add(self, block_id: int, text: str, source: str) -> None:
        self._docs[block_id] = terms(text, self.stemmed) + terms(source, self.stemmed)
        self._bm25 = None

    def remove(self, block_ids: set[int]) -> None:
        for block_id in block_ids:
            self._docs.pop(block_id, None)
        self._bm25 = None

    def top(self, query: str, k: int) -> list[int]:
        words = query_terms(query, self.stemmed)
        if not words or not self._docs or k <= 0:
            return []
        bm25 = self._built()
        # Blocks sharing a word with the query, best first. Not "score > 0": in a store of a few blocks
        # BM25's idf of a word found in most of them is zero or negative.
        wanted = set(words)
        order = torch.argsort(torch.from_numpy(bm25.get_scores(words)), descending=True).tolist()
        return list(islice((self._ids[i] for i in order if wanted.intersection(self._indexed[i])), k))

    def ranked(self, query: str, block_ids: Sequence[int]) -> list[int]:
        """`block_ids` (indexed ones), the best match for the query first (BM25; ties keep their order)."""
        ids = [b for b in block_ids if b in self._docs]
        words = query_terms(query, self.stemmed)
        if not words or len(ids) < 2:
            return ids
        bm25 = self._built()
        scores = bm25.get_batch_scores(words, [self._at[b] for b in ids])
        return [ids[i] for i in sorted(range(len(ids)), key=lambda i: -scores[i])]

    def _built(self) -> BM25Okapi:
        if self._bm25 is None:
            self._ids = list(self._docs)
            labels = self.labels(self._ids) if self.labels is not None and self.stemmed else {}
            self._indexed = [self._docs[i] + terms(labels[i], True) if i in labels else self._docs[i]
                             for i in self._ids]
            self._bm25 = BM25Okapi([d or ["_"] for d in self._indexed])
            self._at = {b: i for i, b in enumerate(self._ids)}
        return self._bm25


class ReprBank:
    """Representative keys of every block, `[layers, r, kv_heads, dim]` each, kept in RAM (fp16)."""

    def __init__(self):
        self._reprs: dict[int, torch.Tensor] = {}
        self._stack: torch.Tensor | None = None
        self._ids: list[int] = []

    def add(self, block_id: int, reprs: torch.Tensor) -> None:
        self._reprs[block_id] = reprs.to(torch.float16)
        self._stack = None

    def remove(self, block_ids: set[int]) -> None:
        for block_id in block_ids:
            self._reprs.pop(block_id, None)
        self._stack = None

    def nbytes(self) -> int:
        return sum(r.numel() * 2 for r in self._reprs.values())

    def __len__(self) -> int:
        return len(self._reprs)

    def __getitem__(self, block_id: int) -> torch.Tensor:
        return self._reprs[block_id]

    def stacked(self) -> tuple[list[int], torch.Tensor]:
        """Block ids and their representative keys stacked `[L, N, r, Hkv, D]` (built once per change)."""
        if self._stack is None:
            self._ids = list(self._reprs)
            self._stack = torch.stack([self._reprs[i] for i in self._ids], dim=1)
        return self._ids, self._stack

    def top(self, layer: int, query_raw: torch.Tensor, k: int, exclude: set[int]) -> list[int]:
        """Blocks whose representative keys best match any question query of this layer."""
        if not self._reprs or k <= 0:
            return []
        bank = self.stacked()[1][layer]
        _, n_heads, q_len, dim = query_raw.shape
        kv_heads = bank.shape[2]
        q = query_raw[0].reshape(kv_heads, n_heads // kv_heads, q_len, dim).to(torch.float32).cpu()
        scores = []
        for part in torch.split(bank, 2048):
            s = torch.einsum("kgtd,nrkd->nkgtr", q, part.float())
            scores.append(s.amax(dim=(2, 3, 4)).sum(dim=1))
        order = torch.argsort(torch.cat(scores), descending=True).tolist()
        return [self._ids[i] for i in order if self._ids[i] not in exclude][:k]


def neighbours(best: list[int], meta: dict[int, BlockMeta], by_position: dict[tuple[int, int], int],
               count: int) -> list[int]:
    """The right neighbour (next block of the same document) of each of the `count` best blocks."""
    out = []
    for block_id in best[:count]:
        m = meta[block_id]
        nxt = by_position.get((m.doc_id, m.seq + 1))
        if nxt is not None:
            out.append(nxt)
    return out


def fuse(pinned: list[int], lexical: list[int], extra: list[int], attention: list[int], budget: int) -> list[int]:
    """The read set in priority order (pins, lexical, neighbours, key scores), cut to `budget`, then
    returned in original order (block ids grow with ingest order)."""
    chosen: list[int] = []
    for block_id in [*pinned, *lexical, *extra, *attention]:
        if block_id not in chosen:
            chosen.append(block_id)
    return sorted(chosen[:budget])


def rrf(rankings: list[list[int]], k: int = 60) -> list[int]:
    """Reciprocal rank fusion (Cormack et al. 2009): each id scores the sum of `1 / (k + rank)` over the
    rankings that hold it. Rank-based, so BM25 scores and key scores need no common scale; ties keep the
    order in which ids were first seen."""
    score: dict[int, float] = {}
    for ranking in rankings:
        for rank, block_id in enumerate(ranking, 1):
            score[block_id] = score.get(block_id, 0.0) + 1.0 / (k + rank)
    return sorted(score, key=lambda b: -score[b])
