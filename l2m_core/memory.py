"""`Memory`: a frozen model plus its block memory. Ingest documents once; ask questions that read them.

    mem = Memory.open_or_create(".l2m", load_model())
    mem.ingest_document(text, source="src/app.py")
    answer = mem.ask("Where is the retry policy configured?")
    print(answer.text, [str(c) for c in answer.citations])

Writing: a document is fed in chunks; each chunk attends to the store's reading head (opt-in: the chat
turn and reading instruction a question later sees before its context; empty by default), the document's
first `sink` tokens, the last `local` tokens and itself (attention.RecordPlan). With a head, blocks are
written in the context they are read in (DESIGN.md s10: pasted evidence read after the instruction is read
far better than evidence encoded before it).
Every token's un-rotated key and value are kept; each run of `block_size` tokens becomes a block:
compressed keys/values per layer (cold tier), representative keys and provenance (in RAM for addressing).
Documents are independent, so one file can be re-ingested without touching the others.

Reading: the prompt is split at the memory slot into the reading head and a tail (any further instruction
and the question). Each layer picks its read set (addressing.py), rotates those blocks to the positions
right after the head, and the tail and every generated token attend to `[head | read blocks | tail so
far]` (attention.ReadPlan). The attention mass on each block is
mapped back to `source:line` citations.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from l2m_core import codec, heap
from l2m_core.addressing import LexicalIndex, ReprBank, fuse, neighbours
from l2m_core.answer_form import (
    asks_for,
    defined_answer,
    named_answer,
    passage_answer,
    quantity_answer,
    quantity_asked,
    states_quantity,
    supported_answer,
    without_repeats,
)
from l2m_core.attention import BatchPlan, ReadPlan, RecordPlan, active, record
from l2m_core.errors import L2MError
from l2m_core.families import check_supported
from l2m_core.generation import ChooseToken, greedy, stop_ids
from l2m_core.hot_tier import HotTier
from l2m_core.loading import LoadedModel, kv_geometry
from l2m_core.rope import Rotary
from l2m_core.scoring import question_likelihoods
from l2m_core.settings import WRITE_TIME, MemorySettings
from l2m_core.store import (
    BlockMeta,
    BlockShape,
    BlockSpan,
    ColdTier,
    EncodedBlock,
    EncodedDocument,
    Staging,
    StoreFiles,
    Written,
    is_store,
)

if TYPE_CHECKING:
    from l2m_core.address_head import AddressHead
    from l2m_core.reader import Reader

MEMORY_SLOT = "\x00L2M-MEMORY\x00"
READING_INSTRUCTION = "Answer the question using the context. Answer briefly."


def prompt_text(tokenizer, question: str, instruction: str | None = None, passage: str = "") -> str:
    """The chat prompt of a question, with `MEMORY_SLOT` where the read blocks go and `passage` (text
    re-read from them) right after. The reading instruction comes before the context (measured: instruction
    after the evidence read far worse); an `instruction` of the caller's (tools, answer format) goes after
    it, beside the question."""
    extra = f"{instruction}\n\n" if instruction else ""
    content = f"{READING_INSTRUCTION}\n\nContext:\n{MEMORY_SLOT}{passage}\n\n{extra}Question: {question}"
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


def pasted_prompt(tokenizer, question: str, context: str) -> str:
    """The chat prompt of a question with `context` pasted as text where memory is read (the baselines that
    re-prompt: the evidence pasted, BM25's chunks)."""
    return prompt_text(tokenizer, question).replace(MEMORY_SLOT, context)


def reading_head(tokenizer) -> str:
    """The prompt up to the memory slot: what every block is written after, and read after."""
    return prompt_text(tokenizer, "").split(MEMORY_SLOT)[0]


_ASKS_REASONS = re.compile(r"\b(why|recitals?)\b", re.IGNORECASE)


class BlocksGone(L2MError):
    """Blocks chosen for reading are no longer in the store: another process retired them since the index
    in RAM was loaded (`ask` then reloads it and reads again), or the store is damaged."""


@dataclass(frozen=True)
class Enclosing:
    """The definition or section a block lies in, as the corpus index knows it."""
    label: str                   # "RetryPolicy.backoff", "Article 33", a heading
    heading_block: int | None    # the block holding its first line (`def ...`, "Article 33 / title")
    page: int | None = None      # the page of a PDF the block is on
    heading: str | None = None   # the headings above the block in an HTML or DOCX document
    code: bool = False           # the block is source code (a file parsed with a grammar)
    recital: bool = False        # the block lies in a recital: a reason a regulation's preamble gives, not law


@dataclass(frozen=True)
class Citation:
    source: str
    line_start: int
    line_end: int
    weight: float
    block_ids: tuple[int, ...]
    label: str = ""              # the enclosing symbol or section of its heaviest block, when known
    page: int | None = None      # the PDF page of that block, when the source is a PDF
    heading: str | None = None   # the headings above that block, when the source is an HTML or DOCX file
    code: bool = False           # the source is code (a file the index parsed with a grammar)

    def __str__(self) -> str:
        page = f" p.{self.page}" if self.page is not None else ""
        label = f" {self.label}" if self.label else ""
        heading = f" [{self.heading}]" if self.heading else ""
        return f"{self.source}:{self.line_start}-{self.line_end}{page}{label}{heading}"


@dataclass
class Answer:
    text: str
    citations: list[Citation]
    read_set: dict[int, list[int]]       # layer -> block ids it read
    lexical: list[int]                   # blocks addressed by name or text (shared by all layers)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"answer": self.text, "citations": [_citation_dict(c) for c in self.citations],
                "lexical_blocks": self.lexical, "timings": {k: round(v, 4) for k, v in self.timings.items()}}


def _citation_dict(c: Citation) -> dict:
    """A citation as JSON: `page` and `heading` only where the source has them."""
    place = {key: value for key, value in (("page", c.page), ("heading", c.heading)) if value is not None}
    return {"source": c.source, "lines": [c.line_start, c.line_end], "label": c.label, **place,
            "weight": round(c.weight, 4)}


class Memory:
    def __init__(self, files: StoreFiles, lm: LoadedModel, settings: MemorySettings, index: bool = True):
        self.files, self.lm, self.settings = files, lm, settings
        self.indexed = index  # False: open to write only (a cluster worker), no in-RAM index of the blocks
        self.model, self.tokenizer = lm.model, lm.tokenizer
        cfg = self.model.config
        self.layers = cfg.num_hidden_layers
        self.kv_heads, self.head_dim = kv_geometry(cfg)
        block_bytes = 2 * settings.block_size * self.kv_heads * self.head_dim * self.layers * self.model.dtype.itemsize
        if settings.hot_budget_mb * 2**20 < block_bytes:
            raise L2MError(f"hot budget {settings.hot_budget_mb} MB is too small for one block "
                           f"({block_bytes / 2**20:.2f} MB); raise hot_budget_mb")
        self.hot = HotTier(int(settings.hot_budget_mb * 2**20))
        self.cold = ColdTier(files.engine, BlockShape(self.layers, self.kv_heads, self.head_dim, settings.repr_keys,
                                                      settings.codec))
        self.model.set_attn_implementation("l2m")
        self.rotary = Rotary(self.model)
        self.meta: dict[int, BlockMeta] = {}
        self.by_position: dict[tuple[int, int], int] = {}
        self.lexical = LexicalIndex(self._labels, settings.stemmed_lexical)
        self.reprs = ReprBank()
        self.address_head: AddressHead | None = None  # optional learned addressing, fused with BM25
        self.reader: Reader | None = None  # optional trained reader, acting on the question and answer tokens
        # Where each block lies in its corpus (set by the agent from the corpus index): heading blocks join
        # the read set beside what addressing found, and citations name their definition or section.
        self.enclosing: Callable[[Iterable[int]], dict[int, Enclosing]] | None = None
        # The paragraphs elsewhere in their documents that refer to the units blocks lie in (set by the agent
        # from the corpus index): the fine for breaking an Article's obligations is where it is referred to.
        self.referrers: Callable[[Iterable[int]], list[list[int]]] | None = None
        self._heads: dict[str, tuple[list[int], list[torch.Tensor], list[torch.Tensor]]] = {}
        if index:
            self._load_index()

    # ---- opening -----------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, lm: LoadedModel, settings: MemorySettings | None = None,
               database_url: str | None = None) -> Memory:
        check_supported(lm.model.config)
        settings = settings or MemorySettings()
        files = StoreFiles.create(Path(path), _model_info(lm), settings, database_url)
        return cls(files, lm, settings)

    @classmethod
    def open(cls, path: str | Path, lm: LoadedModel, index: bool = True, **overrides) -> Memory:
        """Open an existing store; `overrides` change read-time settings (top-k, budgets) for this session.
        `index=False` opens it only to encode and write documents (a cluster worker): the in-RAM index that
        reading needs (every block's text and representative keys) is neither loaded nor kept, so a writer's
        footprint does not grow with the store; such a Memory cannot answer questions."""
        check_supported(lm.model.config)
        files = StoreFiles.open(Path(path))
        if files.manifest.get("fingerprint") != lm.fingerprint:
            raise L2MError(f"store {path} was built with model {files.manifest.get('model')} "
                           f"(fingerprint {files.manifest.get('fingerprint')}); the loaded model {lm.name} has "
                           f"fingerprint {lm.fingerprint}. Use the same model or a new store.")
        if changed := [k for k in WRITE_TIME if k in overrides and overrides[k] != getattr(files.settings, k)]:
            raise L2MError(f"store {path} was written with other {', '.join(changed)}; these settings shape "
                           "what is stored and cannot change when it is opened: ingest into a new store")
        return cls(files, lm, files.settings.replace(**overrides), index)

    @classmethod
    def open_or_create(cls, path: str | Path, lm: LoadedModel, settings: MemorySettings | None = None) -> Memory:
        if is_store(path):
            return cls.open(path, lm)
        return cls.create(path, lm, settings)

    def close(self) -> None:
        self.files.engine.dispose()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fork(self, path: str | Path) -> Memory:
        """A copy of this store at `path` (SQLite only), to modify without touching this one; it addresses
        with the same learned head, if any."""
        forked = Memory(self.files.fork(Path(path)), self.lm, self.settings)
        forked.address_head = self.address_head
        return forked

    def refresh(self) -> bool:
        """Reload the in-RAM index if another process changed the store since; True when it did."""
        if not self.indexed:
            raise L2MError("this memory was opened to write only (index=False); open it again to read")
        if self.cold.generation() == self._loaded_generation:
            return False
        self.meta, self.by_position = {}, {}
        self.lexical, self.reprs = LexicalIndex(self._labels, self.settings.stemmed_lexical), ReprBank()
        self.hot = HotTier(self.hot.budget)
        self._load_index()
        return True

    def _load_index(self) -> None:
        self._loaded_generation = self.cold.generation()
        for block in self.cold.blocks():
            self._remember(block.id, block.meta, block.text, self._decode_repr(block.repr))

    def _remember(self, block_id: int, meta: BlockMeta, text: str, reprs: torch.Tensor) -> None:
        self.meta[block_id] = meta
        self.by_position[(meta.doc_id, meta.seq)] = block_id
        self.lexical.add(block_id, text, meta.source)
        self.reprs.add(block_id, reprs)

    def _forget(self, block_ids: set[int]) -> None:
        for block_id in block_ids:
            meta = self.meta.pop(block_id)
            self.by_position.pop((meta.doc_id, meta.seq), None)
        self.lexical.remove(block_ids)
        self.reprs.remove(block_ids)
        self.hot.discard_blocks(block_ids)

    # ---- writing -----------------------------------------------------------------------------------

    def ingest_document(self, text: str | bytes, source: str) -> list[BlockSpan]:
        """Write one document into memory (replacing an older version of the same source)."""
        text = _document_text(text, source)
        sha = hashlib.sha256(text.encode()).hexdigest()
        _, same = self._stored(source, sha)
        if same is not None:
            return same
        with self.cold.stage() as staging:
            document = self._encode_document(text, source, sha, staging)
            replacing, same = self._stored(source, sha)  # again: another writer may have stored it meanwhile
            if same is not None:
                return same  # (what was staged is removed)
            return self._written(document, staging.commit(document, replacing))

    def encode_document(self, text: str | bytes, source: str) -> EncodedDocument:
        """Run one document through the model without touching the database (`write_encoded` stores it)."""
        text = _document_text(text, source)
        return self._encode_document(text, source, hashlib.sha256(text.encode()).hexdigest())

    def write_encoded(self, document: EncodedDocument) -> list[BlockSpan]:
        """Store an encoded document in one transaction, replacing an older version of its source; when the
        store already holds exactly this text (a writer died after committing it), hand back those blocks."""
        replacing, same = self._stored(document.source, document.sha256)
        if same is not None:
            return same
        return self._written(document, self.cold.write(document, replacing))

    def _stored(self, source: str, sha: str) -> tuple[int | None, list[BlockSpan] | None]:
        """The id of the stored version of `source` (None: none), and its blocks if it holds this very text."""
        existing = self.cold.document(source)
        if existing is None:
            return None, None
        return existing.id, self.cold.spans(existing.id) if existing.sha256 == sha else None

    def _written(self, document: EncodedDocument, written: Written) -> list[BlockSpan]:
        """Bring the index in RAM up to a document just stored; its blocks' spans."""
        if self.indexed:
            self._forget(written.removed & self.meta.keys())
            for block_id, block in zip(written.block_ids, document.blocks, strict=True):
                self._remember(block_id, replace(block.meta, doc_id=written.doc_id), block.text, block.reprs)
            self._loaded_generation = self.cold.generation()
        return [BlockSpan(block_id, block.meta.line_start, block.meta.line_end)
                for block_id, block in zip(written.block_ids, document.blocks, strict=True)]

    def retire_document(self, source: str) -> int:
        doc = self.cold.document(source)
        if doc is None:
            return 0
        removed = self.cold.retire(doc.id)
        self._forget(removed & self.meta.keys())
        self._loaded_generation = self.cold.generation()
        return len(removed)

    def live_sources(self) -> dict[str, str]:
        return self.cold.sources()

    def _encode_document(self, text: str, source: str, sha: str, staging: Staging | None = None
                         ) -> EncodedDocument:
        """Encode the whole document. With `staging`, each block goes into the database as soon as it is
        encoded (a chunk's blocks per short transaction, so the write lock is never held while the model
        runs) and the document returned holds no keys or values; without, they stay in RAM (a document
        sent to another process to be written)."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        ready = []
        for seq, (start, end, keys, values, received) in enumerate(self._encode_blocks(ids)):
            char_start = offsets[start][0] if start else 0
            char_end = offsets[end][0] if end < len(ids) else len(text)
            meta = BlockMeta(0, seq, source, end - start, char_start, char_end,  # doc_id: known once written
                             bisect.bisect_right(newlines, char_start - 1) + 1,
                             bisect.bisect_right(newlines, max(char_end - 2, char_start - 1)) + 1)
            kv = list(zip(codec.encode_layers(keys.transpose(1, 2), self.settings.codec),
                          codec.encode_layers(values.transpose(1, 2), self.settings.codec), strict=True))
            block = EncodedBlock(meta, text[char_start:char_end], self._representatives(keys, received).half(), kv)
            if staging is not None:
                staging.add(block)
                block = replace(block, kv=[])
            ready.append(block)
        return EncodedDocument(source, sha, len(ids), ready)

    def _encode_blocks(self, ids: Sequence[int]) -> Iterable[tuple]:
        """Run the document through the model chunk by chunk; yield finished blocks as
        `(start, end, keys [L, Hkv, T, D], values, received [L, Hkv, T])`, un-rotated, in order.
        Blocks never cross chunks (`chunk_size` is a multiple of `block_size`), so each is cut from its own
        chunk's states; earlier chunks are kept only while the local window still reaches into them."""
        s = self.settings
        device = self.lm.device
        n = len(ids)
        _, head_k, head_v = self._head_states(self.settings.reading_head or "")
        layers = range(self.layers)
        sink_k = sink_v = None   # the document's first `sink` tokens, per layer
        recent: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (first token, keys, values), [L, Hkv, T, D]
        prefix = None            # what `prefix_k` holds: sink tokens, (chunk, first token kept) of the window
        for t0 in range(0, n, s.chunk_size):
            chunk = torch.tensor([ids[t0:t0 + s.chunk_size]], device=device)
            local_from = max(min(s.sink, t0), t0 - s.local)
            n_sink = min(s.sink, t0, local_from)
            window = tuple((first, max(local_from - first, 0)) for first, _, _ in recent)
            if (n_sink, window) != prefix:  # with no local window, twice per document
                prefix = n_sink, window
                prefix_k, prefix_v = self._prefix(head_k, head_v, sink_k, sink_v, n_sink, recent, local_from)
            n_prefix = prefix_k[0].shape[2]
            positions = torch.arange(n_prefix, n_prefix + chunk.shape[1], device=device)
            plan = record(self.model, chunk, RecordPlan(self.rotary, prefix_k, prefix_v, positions,
                                                        track_received=True), self.layers)
            keys = torch.stack([plan.keys[layer][0] for layer in layers])            # [L, Hkv, T, D]
            values = torch.stack([plan.values[layer][0] for layer in layers])
            received = torch.stack([plan.received[layer] for layer in layers])      # [L, Hkv, T]
            if not t0:
                sink_k, sink_v = [keys[layer][None, :, :s.sink] for layer in layers], [
                    values[layer][None, :, :s.sink] for layer in layers]
            done = t0 + chunk.shape[1]
            for start in range(t0, done, s.block_size):
                a, b = start - t0, min(start + s.block_size, done) - t0
                yield start, t0 + b, keys[:, :, a:b], values[:, :, a:b], received[:, :, a:b]
            recent = [(first, k, v) for first, k, v in [*recent, (t0, keys, values)]
                      if first + k.shape[2] > done - s.local]
            heap.trim()  # the chunk's freed buffers, before the next pass fragments the heap further

    def _prefix(self, head_k: list[torch.Tensor], head_v: list[torch.Tensor], sink_k: list[torch.Tensor],
                sink_v: list[torch.Tensor], n_sink: int, recent: list, local_from: int
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """What a chunk attends to before itself, per layer: `[head | first n_sink tokens | local window]`,
        the keys rotated to positions 0..n-1."""
        ks, vs = [], []
        for layer in range(self.layers):
            sink = [(sink_k[layer][:, :, :n_sink], sink_v[layer][:, :, :n_sink])] if n_sink else []
            local = [(k[layer][None, :, max(local_from - first, 0):], v[layer][None, :, max(local_from - first, 0):])
                     for first, k, v in recent]
            k = torch.cat([head_k[layer], *(k for k, _ in sink + local)], dim=2)
            ks.append(self.rotary.rotate(k, torch.arange(k.shape[2], device=k.device), layer))
            vs.append(torch.cat([head_v[layer], *(v for _, v in sink + local)], dim=2))
        return ks, vs

    def _representatives(self, keys: torch.Tensor, received: torch.Tensor) -> torch.Tensor:
        """Per layer and KV head, the `repr_keys` keys that received most attention: `[L, r, Hkv, D]`."""
        r = self.settings.repr_keys
        top = received.topk(min(r, received.shape[-1]), dim=-1).indices           # [L, Hkv, r']
        if top.shape[-1] < r:
            top = torch.cat([top, top[..., :1].expand(*top.shape[:-1], r - top.shape[-1])], dim=-1)
        picked = torch.gather(keys, 2, top[..., None].expand(-1, -1, -1, keys.shape[-1]))  # [L, Hkv, r, D]
        return picked.permute(0, 2, 1, 3).contiguous()

    def _decode_repr(self, blob: bytes) -> torch.Tensor:
        if len(blob) != self.cold.shape.repr_bytes:
            raise L2MError(f"the store {self.files.path} is damaged (a block's representative keys have "
                           f"{len(blob)} bytes); run `l2m memory verify`")
        flat = torch.frombuffer(bytearray(blob), dtype=torch.float16)
        return flat.reshape(self.layers, self.settings.repr_keys, self.kv_heads, self.head_dim)

    # ---- reading -----------------------------------------------------------------------------------

    def ask(self, question: str, instruction: str | None = None, max_new_tokens: int = 64,
            pins: Sequence[int] = (), hops: int = 1, choose_token: ChooseToken | None = None) -> Answer:
        """Answer `question` reading memory. `pins` are block ids read by every layer (see `blocks_for`);
        `instruction` (tools, an answer format) is placed beside the question, after the context.
        With `hops=2` the first answer joins the question to address memory again (chained reads).
        `choose_token(logits) -> token id` replaces greedy argmax in decoding (e.g. `grammar.JsonGrammar`,
        which constrains the answer to a JSON schema; its text is then returned as decoded)."""
        if not question.strip():
            raise L2MError("the question is empty")
        self.refresh()
        try:
            return self._ask(question, instruction, max_new_tokens, list(pins), hops, choose_token)
        except BlocksGone:
            if not self.refresh():  # no other writer retired them: the store itself lost them
                raise
            return self._ask(question, instruction, max_new_tokens, list(pins), hops, choose_token)

    def _ask(self, question: str, instruction: str | None, max_new_tokens: int, pins: list[int],
             hops: int, choose_token: ChooseToken | None = None) -> Answer:
        query, answer = question, None
        run_text = functools.cache(self._run_text)  # the answer forms and the amount hop read runs again
        for _ in range(max(1, hops)):
            answer = self._answer(question, query, instruction, max_new_tokens, pins, run_text, choose_token)
            query = f"{question} {answer.text}"
        if not instruction and choose_token is None and (more := self._stating_referrers(question, answer, run_text)):
            again = self._answer(question, question, instruction, max_new_tokens, pins + more, run_text, choose_token)
            answer = replace(again, timings={k: answer.timings["total_s"] + t for k, t in again.timings.items()})
        return answer

    def _stating_referrers(self, question: str, answer: Answer, run_text: Callable[[Citation], str],
                           at_most: int = 2) -> list[int]:
        """For a question that asks for an amount no run read states, the blocks of (at most `at_most`)
        paragraphs that refer to the units of the first `rerank_citations` runs and state an amount, within
        half the read budget, to read the question again with: obligations are laid down in one Article and the
        fines for breaking them in another, which names them ("Up to what amount can an importer be fined for
        breaking its obligations?")."""
        if (self.referrers is None or quantity_asked(question) != "amount" or not answer.citations
                or any(states_quantity("amount", run_text(c)) for c in answer.citations)):
            return []
        found: list[int] = []
        for c in answer.citations[:self.settings.rerank_citations]:
            for paragraph in self.referrers(c.block_ids):
                fits = len(found) + len(paragraph) <= self.settings.max_read_blocks // 2
                if at_most and fits and paragraph[0] not in found and states_quantity(
                        "amount", self._lines(self.meta[paragraph[0]], self.meta[paragraph[-1]])):
                    found += paragraph
                    at_most -= 1
        return found

    def _answer(self, question: str, query: str, instruction: str | None, max_new_tokens: int,
                pins: list[int], run_text: Callable[[Citation], str], choose_token: ChooseToken | None = None
                ) -> Answer:
        start = time.perf_counter()
        hits = self._hits(query)
        shared = self._shared_read_set(hits, pins)
        pins_first = asks_for(question) is None  # "which method of PathSpec ...": the class is only context
        plan, logits = self._prefill(*self._tail(question, instruction), shared, pins)
        if self.settings.reread_tokens:  # the top of what was read, read again as text before the question
            passage = self._passage(self._citations(plan.block_mass(), set(pins), hits, pins_first))
            plan, logits = self._prefill(*self._tail(question, instruction, passage), shared, pins)
        first_token = time.perf_counter()
        text = self._decode(plan, logits, max_new_tokens, choose_token).strip()
        if choose_token is None:  # a constrained reply (JSON) is exactly what was decoded
            text = without_repeats(text)
        citations = self._citations(plan.block_mass(), set(pins), hits, pins_first)
        # a plain question (no tool protocol, no answer format of the caller's, no grammar)
        if not instruction and choose_token is None:
            citations = self._reranked(question, citations, set(pins) if pins_first else set())
            text, citations = named_answer(question, text, citations, run_text,
                                           functools.partial(self._explains, question), self.settings.rerank_citations)
            text, citations = defined_answer(question, text, citations, run_text)
            text, citations = quantity_answer(question, text, citations, run_text)
            text, citations = passage_answer(question, text, citations, run_text)
            text, citations = supported_answer(question, text, citations, run_text)
        done = time.perf_counter()
        return Answer(text, citations, plan.read_set(), shared,
                      {"first_token_s": first_token - start, "total_s": done - start})

    def _tail(self, question: str, instruction: str | None, passage: str = "") -> tuple[list[int], slice]:
        """The prompt after the memory slot as token ids, and where the question lies in it."""
        text = prompt_text(self.tokenizer, question, instruction, passage).split(MEMORY_SLOT)[1]
        tail = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        q_from = text.rindex(question)
        q_tokens = [i for i, (a, b) in enumerate(tail["offset_mapping"]) if b > q_from and a < q_from + len(question)]
        return tail["input_ids"], slice(q_tokens[0], q_tokens[-1] + 1)

    def _passage(self, citations: list[Citation]) -> str:
        """The text of the best-cited runs of blocks, each under its citation (file, lines, enclosing
        definition or section), up to `reread_tokens`. Read as prompt tokens, after the instruction, this
        text is encoded in the context it is read in, as pasted evidence is; the memory addressed it."""
        budget, parts = self.settings.reread_tokens, []
        for c in citations:
            taken = []
            for b in c.block_ids:
                if self.meta[b].n_tokens > budget:
                    break
                budget -= self.meta[b].n_tokens
                taken.append(b)
            if not taken:
                break
            parts.append(self._quoted(c, taken))
        return "".join(f"\n\n{p}" for p in parts)

    def _quoted(self, c: Citation, block_ids: Sequence[int]) -> str:
        """The whole lines of `block_ids` (a run, or its first blocks) under their citation:
        `[pkg/util.py:494-533 normalize_file]` then the lines."""
        first, last = self.meta[block_ids[0]], self.meta[block_ids[-1]]
        return f"[{replace(c, line_start=first.line_start, line_end=last.line_end)}]\n{self._lines(first, last)}"

    def _run_text(self, c: Citation) -> str:
        """The whole lines of the run of blocks `c` cites."""
        return self._lines(self.meta[c.block_ids[0]], self.meta[c.block_ids[-1]])

    def _reranked(self, question: str, citations: list[Citation], kept_first: set[int]) -> list[Citation]:
        """The first `rerank_citations` runs after those holding a `kept_first` block (pins cited first stay
        first) ordered by how well each explains the question: the model's likelihood of the question after
        the run's text under its citation (`scoring.question_likelihoods`). BM25 ranks by shared words; a
        paraphrased question ("which Article puts ENISA in charge of ...") shares few with its paragraph.
        Runs of code keep BM25's order: there the question's identifiers rank better than the model (on the
        code sets re-ranking lost three first citations on one and gained three on the other)."""
        start = next((i for i, c in enumerate(citations) if kept_first.isdisjoint(c.block_ids)), len(citations))
        top = citations[start:start + self.settings.rerank_citations]
        if len(top) < 2 or any(c.code for c in top):  # code: BM25 on identifiers ranks it better
            return citations
        scores = self._explains(question, top)
        order = sorted(range(len(top)), key=lambda i: -scores[i])
        return [*citations[:start], *(top[i] for i in order), *citations[start + len(top):]]

    def _explains(self, question: str, runs: list[Citation]) -> list[float]:
        """How well each run explains the question: the model's likelihood of it after the run's whole lines
        under its citation (`scoring.question_likelihoods`)."""
        return question_likelihoods(self.model, self.tokenizer, [self._quoted(c, c.block_ids) for c in runs], question)

    def _lines(self, first: BlockMeta, last: BlockMeta) -> str:
        """The whole lines from `first`'s first line to `last`'s last line (blocks start mid-line)."""
        around = self.blocks_for(first.source, first.line_start, last.line_end)
        texts = self.block_texts(around)
        text = "".join(texts[b] for b in around)
        base = self.meta[around[0]].char_start
        start = text.rfind("\n", 0, first.char_start - base) + 1
        end = text.find("\n", max(last.char_end - base - 1, 0))
        return text[start:end if end >= 0 else len(text)].strip("\n")

    def _hits(self, query: str) -> list[int]:
        """The blocks the question's text addresses, best first: BM25, fused by rank with the learned
        head's key scores when a head is set; the first `address_pool` of them (recitals after the others)
        re-ranked with the model's likelihood of the question (`_with_likelihood`), the first `lexical_top_k`
        kept. Blocks in recitals come after the others unless the question asks about recitals or reasons
        ("why ..."): a regulation's recitals restate its Articles in looser words and drew BM25's first hit
        away from the Article that holds the answer (bench/qa/README.md)."""
        def top(n: int) -> list[int]:
            if self.address_head is not None:
                return self.address_head.fused_top(self, query, n)
            return self.lexical.top(query, n)

        def recital(hits: list[int]) -> dict[int, bool]:
            where = self.enclosing(hits)
            return {b: b in where and where[b].recital for b in hits}

        k = self.settings.lexical_top_k
        pool = max(k, self.settings.address_pool)
        hits = top(pool)
        if self.enclosing is not None and not _ASKS_REASONS.search(query) and any(recital(hits).values()):
            wide = top(4 * pool)  # others to take the recitals' places
            hits = sorted(wide, key=recital(wide).get)[:pool]
        return self._with_likelihood(query, hits, k)[:k]

    def _with_likelihood(self, question: str, blocks: list[int], k: int, constant: int = 2) -> list[int]:
        """`blocks`, BM25's best first, re-ranked by reciprocal rank fusion (rank constant `constant`) of
        BM25's order and the order of how well each explains the question: the model's likelihood of the
        question after the block's text under its file and definition or section
        (`scoring.question_likelihoods`). A paraphrasing question ("which Article puts ENISA in charge of
        ...") shares few words with its paragraph, which BM25 then ranks 5th to 20th. Prose only: where code
        is among BM25's first `k`, its order stands (the question's identifiers rank code better than the
        model; on the code sets re-ranking lost answers). Nothing to re-rank: `blocks` as they are."""
        if len(blocks) <= k:
            return blocks
        where = self.enclosing(blocks[:k]) if self.enclosing is not None else {}
        if any(e.code for e in where.values()):
            return blocks
        labels, texts = self._labels(blocks), self.block_texts(blocks)
        passages = [f"[{self.meta[b].source} {labels.get(b, '')}]\n{texts[b]}" for b in blocks]
        scores = question_likelihoods(self.model, self.tokenizer, passages, question)
        by_model = {i: rank for rank, i in enumerate(sorted(range(len(blocks)), key=lambda i: -scores[i]))}
        fused = sorted(range(len(blocks)), key=lambda i: -(1 / (constant + i) + 1 / (constant + by_model[i])))
        return [blocks[i] for i in fused]

    def _shared_read_set(self, hits: list[int], pins: list[int]) -> list[int]:
        """Blocks every layer reads: pins, the addressed `hits` and their right neighbours."""
        s = self.settings
        if len(self.meta) <= s.max_read_blocks:  # the whole memory fits the budget: read all of it
            return sorted(self.meta)
        extra = neighbours(hits, self.meta, self.by_position, s.neighbours)
        headings = self._headings(hits) if s.heading_blocks else []
        return fuse(pins, hits, [*headings, *extra], [], s.max_read_blocks)

    def _labels(self, ids: list[int]) -> dict[int, str]:
        """The definition or section each block lies in, by name (none without a corpus index)."""
        if self.enclosing is None:
            return {}
        return {b: e.label for b, e in self.enclosing(ids).items() if e.label}

    def _headings(self, found: list[int]) -> list[int]:
        """The heading blocks of the definitions or sections holding `found` blocks: a function body read
        without its `def` line, or a paragraph without "Article N", leaves the model to invent the name."""
        if self.enclosing is None:
            return []
        where = self.enclosing(found)
        return [h for b in found if (h := where[b].heading_block if b in where else None) is not None and h != b]

    def logits(self, tail: list[int], pins: Sequence[int] = (), head: str | None = None) -> torch.Tensor:
        """Next-token logits after `[head | read set | tail]` (default head: the reading head): the read path
        without decoding. Every tail token counts as question for addressing. Used to check the path against
        the plain model."""
        pins = list(pins)
        shared = fuse(pins, [], [], [], self.settings.max_read_blocks)
        return self._prefill(list(tail), slice(0, len(tail)), shared, pins, head)[1]

    def answer_logits(self, question: str, answer: list[int], pins: Sequence[int] = ()) -> torch.Tensor:
        """The logits predicting each token of `answer` after `question`, read as `ask` reads it (addressing,
        reading head, read blocks), with autograd on: stored keys and values are constants, and what acts on
        the question's and answer's own projections (the reader) gets gradients. For training a reader."""
        return self.answer_logits_batch([(question, answer, pins)])[0]

    def answer_logits_batch(self, items: Sequence[tuple[str, list[int], Sequence[int]]]) -> list[torch.Tensor]:
        """`answer_logits` for many `(question, answer, pins)` in one forward pass, each row reading its own
        read set (`BatchPlan`): what a GPU needs to train a reader at more than one sample a pass."""
        plans, rows, tails = [], [], []
        for question, answer, pins in items:
            tail, question_span = self._tail(question, None)
            rows.append(tail + list(answer))
            tails.append(len(tail))
            plan = self._read_plan(rows[-1], question_span, self.read_set(question, pins), list(pins))
            plan.weigh_blocks = False
            plans.append(plan)
        width = max(len(row) for row in rows)
        for plan in plans:
            plan.positions = plan.positions[0] + torch.arange(width, device=plan.positions.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=self.lm.device)
        keep = width - min(tails) + 1  # from the logit that predicts the shortest tail's first answer token
        with active(BatchPlan(plans)), self._reading():
            logits = self.model(ids, position_ids=torch.stack([p.positions for p in plans]), use_cache=False,
                                logits_to_keep=keep).logits
        first = width - keep
        return [logits[i, tails[i] - 1 - first:len(row) - 1 - first] for i, row in enumerate(rows)]

    def read_set(self, question: str, pins: Sequence[int] = ()) -> list[int]:
        """The blocks every layer reads for `question` (addressing, then `pins`), as `ask` chooses them."""
        return self._shared_read_set(self._hits(question), list(pins))

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """The reader (if any) hooked onto the model for one forward pass of question or answer tokens only:
        stored blocks and the reading head are the base model's states."""
        if self.reader is None:
            yield
            return
        self.reader.attach()
        try:
            yield
        finally:
            self.reader.detach()

    def _prefill(self, tail: list[int], question: slice, shared: list[int], pins: list[int],
                 head_text: str | None = None):
        """Run the tail against `[head | read blocks]` (`_read_plan`); the plan and the next token's logits."""
        plan = self._read_plan(tail, question, shared, pins, head_text)
        with torch.inference_mode(), active(plan), self._reading():
            logits = self.model(torch.tensor([tail], device=self.lm.device), position_ids=plan.positions[None],
                                use_cache=False, logits_to_keep=1).logits[0, -1]
        return plan, logits

    def _read_plan(self, tail: list[int], question: slice, shared: list[int], pins: list[int],
                   head_text: str | None = None) -> ReadPlan:
        """The plan for a tail read against `[head | read blocks]`. By default the read blocks end where the
        tail starts, `max_read_blocks * block_size` after the head. With `settings.contiguous` the shared read set sits
        right after the head; only blocks a layer adds by its own key scores (`attention_top_k`) leave room
        before it, so positions are contiguous whenever every layer reads the same set."""
        s, device = self.settings, self.lm.device
        # A bare store's blocks were written after no head; its questions still need the chat turn's start.
        head, head_k, head_v = self._head_states(
            self.settings.reading_head or reading_head(self.tokenizer) if head_text is None else head_text)
        staged = self._prefetch(shared)
        if s.contiguous:
            room = min(s.attention_top_k, s.max_read_blocks - len(shared)) * s.block_size
            memory_end = len(head) + sum(self.meta[b].n_tokens for b in shared) + room
        else:
            memory_end = len(head) + s.max_read_blocks * s.block_size

        def select(layer: int, query_raw: torch.Tensor) -> list[int]:
            attention = self.reprs.top(layer, query_raw, s.attention_top_k, exclude=set(shared))
            return fuse(pins, shared, [], attention, s.max_read_blocks)

        plan = ReadPlan(self.rotary, head_k, head_v, select, lambda layer, ids: self._fetch(layer, ids, staged),
                        memory_end, question)
        plan.positions = torch.arange(memory_end, memory_end + len(tail), device=device)
        return plan

    def _head_states(self, text: str) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
        """A head's token ids and un-rotated keys/values per layer (at positions 0..n-1), computed once per
        text: the reading head that blocks are written after and read after."""
        if text not in self._heads:
            device, dtype = self.lm.device, self.model.dtype
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                empty = torch.zeros(1, self.kv_heads, 0, self.head_dim, device=device, dtype=dtype)
                self._heads[text] = ids, [empty] * self.layers, [empty] * self.layers
                return self._heads[text]
            positions = torch.arange(len(ids), device=device)
            plan = record(self.model, torch.tensor([ids], device=device),
                          RecordPlan(self.rotary, None, None, positions), self.layers)
            self._heads[text] = (ids, [plan.keys[i] for i in range(self.layers)],
                                 [plan.values[i] for i in range(self.layers)])
        return self._heads[text]

    def _decode(self, plan: ReadPlan, logits: torch.Tensor, max_new_tokens: int,
                choose_token: ChooseToken | None = None) -> str:
        """Greedy decoding (or `choose_token`'s choice) against the plan's per-layer caches (the read set
        stays fixed)."""
        device = self.lm.device

        def feed(token: int) -> torch.Tensor:
            plan.positions = plan.positions[-1:] + 1
            with torch.inference_mode(), active(plan), self._reading():
                return self.model(torch.tensor([[token]], device=device), position_ids=plan.positions[None],
                                  use_cache=False).logits[0, -1]

        reply = greedy(logits, feed, self.stop_ids, max_new_tokens, choose_token)
        return self.tokenizer.decode(reply.tokens, skip_special_tokens=True)

    def _prefetch(self, ids: list[int]) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
        """Read every layer of the blocks in `ids` that the hot tier lacks, in one batched query."""
        missing = [i for i in ids if any((i, layer) not in self.hot for layer in range(self.layers))]
        if not missing:
            return {}
        return {key: self._decode_kv(*key, *blobs) for key, blobs in self.cold.kv(missing).items()}

    def _fetch(self, layer: int, ids: list[int], staged: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One layer's blocks: from the hot tier, else from `staged` (prefetched), else one batched read."""
        found = {i: self.hot.get((i, layer)) or staged.pop((i, layer), None) for i in ids}
        missing = [i for i, entry in found.items() if entry is None]
        if missing:
            found.update({block_id: self._decode_kv(block_id, layer, *blobs)
                          for (block_id, _), blobs in self.cold.kv(missing, layer).items()})
        lost = [i for i in ids if found.get(i) is None]
        if lost:
            raise BlocksGone(f"memory blocks {lost[:5]} are missing from the store; run `l2m memory verify`")
        for i in ids:
            self.hot.put((i, layer), *found[i])
        return [found[i] for i in ids]

    def _decode_kv(self, block_id: int, layer: int, k: bytes, v: bytes) -> tuple[torch.Tensor, torch.Tensor]:
        n_tokens = self.meta[block_id].n_tokens
        if len(k) != self.cold.shape.kv_bytes(n_tokens) or len(v) != len(k):
            raise L2MError(f"memory block {block_id} is damaged in the store (layer {layer}); "
                           "run `l2m memory verify`")
        shape, name = (n_tokens, self.kv_heads, self.head_dim), self.settings.codec
        k, v = codec.decode(k, shape, name), codec.decode(v, shape, name)
        device, dtype = self.lm.device, self.model.dtype
        return (k.transpose(0, 1)[None].to(device, dtype), v.transpose(0, 1)[None].to(device, dtype))

    def _citations(self, mass: dict[int, float], pinned: set[int], hits: Sequence[int] = (),
                   pins_first: bool = True) -> list[Citation]:
        """Read blocks grouped into contiguous runs per document, ordered: runs holding a pinned block
        first when `pins_first` (the user, a tool or the question's own words named them: stronger evidence
        than attention mass, of which a file's first block draws a share as a sink), then by the best
        addressing rank of their blocks (`hits`, best first), then heaviest first. Addressing rank comes
        before mass because it was measured the better guide: on pathspec-dev the run holding BM25's best
        hit lay on the evidence for 17 of 30 questions, the heaviest run for 12. A question that asks for a
        name ("which PathSpec method ...") names other things only as context: `pins_first` is then False
        and pinned runs rank as addressing ranks them (bench/qa/README.md, 2026-11-30). A run is named for
        its heaviest pinned block (a document read whole is about the Article the question named, not the
        first Article, which draws mass as a sink), else its best-ranked hit (the block the question's
        words found, not a neighbouring definition that drew more mass), else its heaviest block."""
        runs: list[list[int]] = []
        for block_id in sorted(mass, key=lambda b: (self.meta[b].doc_id, self.meta[b].seq)):
            m = self.meta[block_id]
            if runs and self.meta[runs[-1][-1]].doc_id == m.doc_id and self.meta[runs[-1][-1]].seq == m.seq - 1:
                runs[-1].append(block_id)
            else:
                runs.append([block_id])
        total = sum(mass.values()) or 1.0
        rank = {b: i for i, b in enumerate(hits)}

        def named_for(run: list[int]) -> int:
            if not pinned.isdisjoint(run):
                return max((b for b in run if b in pinned), key=mass.__getitem__)
            return min(run, key=lambda b: (rank.get(b, len(rank)), -mass[b]))

        named = [named_for(r) for r in runs]
        where = self.enclosing(named) if self.enclosing is not None else {}
        none = Enclosing("", None)
        cites = [Citation(self.meta[r[0]].source, self.meta[r[0]].line_start, self.meta[r[-1]].line_end,
                          sum(mass[b] for b in r) / total, tuple(r), (e := where.get(h, none)).label, e.page, e.heading,
                          e.code)
                 for r, h in zip(runs, named, strict=True)]
        return sorted(cites, key=lambda c: (pins_first and pinned.isdisjoint(c.block_ids),
                                            min(rank.get(b, len(rank)) for b in c.block_ids),
                                            pinned.isdisjoint(c.block_ids), -c.weight))

    # ---- name lookups and bookkeeping ---------------------------------------------------------------

    @property
    def stop_ids(self) -> frozenset[int]:
        """The token ids that end an answer."""
        return stop_ids(self.tokenizer, self.model)

    def blocks_for(self, source: str, line_start: int | None = None, line_end: int | None = None) -> list[int]:
        """Blocks of `source` overlapping the line range (all of them without one): pins for `ask`."""
        lo, hi = line_start or 1, line_end or 10**9
        return sorted(b for b, m in self.meta.items()
                      if m.source == source and m.line_start <= hi and m.line_end >= lo)

    def block_text(self, block_id: int) -> str:
        return self.block_texts([block_id])[block_id]

    def block_texts(self, block_ids: Sequence[int]) -> dict[int, str]:
        """The stored text of each block (read from the cold tier: the index in RAM keeps only its terms).
        Raises `BlocksGone` for a block no longer stored (another writer retired it: `ask` then reloads)."""
        texts = self.cold.texts(block_ids)
        lost = [b for b in block_ids if b not in texts]
        if lost:
            raise BlocksGone(f"memory blocks {lost[:5]} are missing from the store; run `l2m memory verify`")
        return texts

    def block_at(self, source: str, char_offset: int) -> int | None:
        for block_id, m in self.meta.items():
            if m.source == source and m.char_start <= char_offset < m.char_end:
                return block_id
        return None

    def stats(self) -> dict:
        counts = self.cold.counts()
        tokens = sum(m.n_tokens for m in self.meta.values())
        return {"documents": counts["documents"], "blocks": len(self.meta), "tokens": tokens,
                "codec": self.settings.codec, "kv_bytes": counts["kv_bytes"],
                "kv_bytes_per_token": counts["kv_bytes"] / tokens if tokens else None,
                "repr_bytes_in_ram": self.reprs.nbytes(),
                "database_bytes": self.files.database_bytes(), "hot_tier": self.hot.stats(),
                "model": self.files.manifest.get("model"), "settings": self.settings.to_dict()}

    def verify(self) -> list[str]:
        """Consistency problems in the store (empty list when sound): see `ColdTier.verify`."""
        return self.cold.verify()

    def compact(self) -> None:
        """Reclaim space after retired documents (SQLite: checkpoint the WAL and VACUUM)."""
        self.cold.compact()


def _document_text(text: str | bytes, source: str) -> str:
    """A document's text, refused when it is not UTF-8 or holds nothing to ingest."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise L2MError(f"{source} is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise L2MError(f"{source} is empty: nothing to ingest")
    return text


def _model_info(lm: LoadedModel) -> dict:
    cfg = lm.model.config
    return {"model": lm.name, "fingerprint": lm.fingerprint, "architecture": cfg.model_type,
            "layers": cfg.num_hidden_layers}
