"""Per-store settings of the memory engine, with defaults measured on the default model (DESIGN.md s4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from l2m_core.errors import L2MError

CODECS = ("int8", "int4", "fp16", "fp32")
# Settings that shape what is stored (block states and their layout): fixed when a store is created; a
# read-time override may not change them.
WRITE_TIME = ("block_size", "chunk_size", "sink", "local", "repr_keys", "codec", "reading_head")


@dataclass(frozen=True)
class MemorySettings:
    block_size: int = 64          # tokens per memory block
    chunk_size: int = 512         # tokens fed per forward pass while ingesting
    sink: int = 64                # first tokens of a document, always visible while ingesting it
    local: int = 0                # tokens before a chunk that it also sees while ingesting (besides the reading
                                  # head and the sink). 0 since 2026-11-30 (was 256): ingest 0.72-0.78 -> 0.75-0.84x
                                  # the plain forward pass in wall time; answers right, 256 -> 0, on five question
                                  # sets: 40 -> 41 of 102 (bench/SPEED.md). A store keeps the value it recorded
    lexical_top_k: int = 4        # blocks addressed by BM25 over block text
    address_pool: int = 12        # BM25's first N blocks of prose re-ranked with the model's likelihood of the
                                  # question (`Memory._with_likelihood`); <= lexical_top_k: BM25's order. Legal
                                  # development sets (60 q), 0 -> 12: answers 42 -> 44, top citation 44 -> 48,
                                  # evidence read 52 -> 55; 1.5x the time a question (bench/qa/README.md)
    neighbours: int = 2           # the right neighbour of the best N lexical blocks joins too
    attention_top_k: int = 0      # extra blocks per layer chosen by the layer's own query-key scores; off by
                                  # default: on the 16K passkey test such picks displaced the reading of a
                                  # needle that BM25 had already addressed (see the memory engine's notes)
    max_read_blocks: int = 12     # per-layer read budget (pinned blocks count against it)
    repr_keys: int = 4            # representative keys per block and KV head, kept in RAM for addressing
    codec: str = "int8"           # cold-tier compression: int8 | int4 | fp16 | fp32 (exact)
    hot_budget_mb: float = 256.0  # hot-tier byte budget
    contiguous: bool = False      # read blocks start right after the head (exact for any read set); default:
                                  # they end at head + max_read_blocks * block_size, where the question starts
                                  # (the layout the default model's tests were measured with; DORA's TLPT
                                  # question went wrong with contiguous blocks)
    heading_blocks: bool = False  # also read the heading block of each lexical hit (needs the corpus index)
    stemmed_lexical: bool = True  # BM25 over stems, without question words, blocks also under their definition's
                                  # or section's name. Answers right, l2m, plain -> stemmed: pathspec-dev 11 -> 14
                                  # of 30 (where it was chosen), cra-dev 9 -> 11 of 30, dora 6 -> 5 of 12
                                  # (bench/results/qa-*); a store created before keeps the value it recorded
    reread_tokens: int = 0        # after a first pass over the read set, the best-cited blocks (up to this many
                                  # tokens) are read again as text before the question; 0: off
    rerank_citations: int = 3     # the first N cited runs (after pinned ones) of a plain question ordered by
                                  # the model's likelihood of the question after each run's text (UPR), unless
                                  # one is code; 0 or 1: addressing's order. Top citation on the evidence, legal
                                  # sets 38 -> 44 of 57, answers unchanged, 1.2-1.3x the time (bench/qa/README.md)
    reading_head: str = ""        # text every block is written after and read after; "" (default): blocks
                                  # are written as bare documents. `memory.reading_head(tokenizer)` is the chat
                                  # turn up to the context: opt-in, it cost a 16K pass key (see architecture.md)

    def __post_init__(self):
        if self.codec not in CODECS:
            raise L2MError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        for name in ("block_size", "chunk_size", "max_read_blocks", "repr_keys"):
            if getattr(self, name) < 1:
                raise L2MError(f"setting {name} must be at least 1")
        if self.chunk_size % self.block_size:
            raise L2MError("chunk_size must be a multiple of block_size")
        if self.repr_keys > self.block_size:
            raise L2MError("repr_keys cannot exceed block_size")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MemorySettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes) -> MemorySettings:
        return MemorySettings.from_dict({**self.to_dict(), **{k: v for k, v in changes.items() if v is not None}})
