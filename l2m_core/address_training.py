"""Retrieval supervision for the address head: needle samples, their key features, InfoNCE training.

A sample is a short document (a novel passage with a needle inserted) and a question whose answer is the
needle. Ingesting it into a store that already holds a novel haystack gives the candidates: every block
of the store; the positives are the block(s) holding a supporting fact. Two families:

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
from l2m_core.lm2.tasks import default_data_dir, parse_babi
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings

# (needle, question, value kind): the question avoids the needle's content words. {v} is the value.
PASSKEY_TEMPLATES = {
    "train": [
        ("The combination that unlocks the vault is {v}.", "What number opens the safe?", "number"),
        ("Remember it well: the cellar door responds only to the code {v}.",
         "Which digits let someone into the basement?", "number"),
        ("Her locker at the station could be opened with {v}.", "What gets a woman into her cabinet at the depot?",
         "number"),
        ("The captain chose {v} as the secret word for the night watch.",
         "What password did the ship's commander pick for the evening guard?", "word"),
        ("Grandmother buried her jewels beneath the old {v}.", "Under what did the elderly lady hide her gems?",
         "word"),
        ("The telephone extension of the accounts office is {v}.", "What do I dial to reach bookkeeping?", "number"),
        ("My bicycle lock opens with {v}.", "What is the combination for the cycle's padlock?", "number"),
        ("The parcel was sent to house number {v} on Elm Street.", "Where was the package delivered?", "number"),
        ("The winning lottery ticket carried the number {v}.", "Which figure was printed on the prize stub?",
         "number"),
        ("Everyone in the regiment knew the horse named {v} was the fastest.",
         "Which steed outran all others among the soldiers?", "word"),
        ("The gardener planted exactly {v} tulip bulbs this autumn.",
         "How many flowers did the groundskeeper put in the soil in the fall?", "number"),
        ("Our train departs from platform {v}.", "Where do we board the railway carriage?", "number"),
    ],
    "test": [
        ("The key to the archive room hangs on hook {v}.", "On which peg is the storage chamber's key kept?",
         "number"),
        ("The admiral's favourite dog was called {v}.", "What was the name of the naval commander's pet hound?",
         "word"),
        ("The doctor's appointment was moved to room {v}.", "Where will the physician see the patient now?",
         "number"),
        ("The smugglers signalled each other with the word {v}.",
         "What term did the contraband runners use as their sign?", "word"),
        ("The museum's missing painting was catalogued as item {v}.",
         "What inventory entry did the stolen artwork in the gallery have?", "number"),
        ("The wireless password at the cottage is {v}.", "What do guests type to get online at the country house?",
         "word"),
    ],
}
VALUE_WORDS = {
    "train": ["falcon", "juniper", "copper", "willow", "saffron", "harbour", "velvet", "thistle", "marble", "ember"],
    "test": ["otter", "cobalt", "hazel", "meridian", "quartz", "lantern", "sparrow", "tundra", "indigo", "pebble"],
}
NOVELS = {"train": "pride.txt", "test": "sense.txt"}
_SENTENCE_END = re.compile(r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)[.!?][\"']? ")
BABI = {"train": "qa1_*_train.txt", "test": "qa1_*_test.txt"}


@dataclass
class Sample:
    family: str                       # "passkey" or "babi"
    document: str                     # passage with the needle(s) inserted
    question: str
    support: list[tuple[int, int]]    # character spans of the supporting fact(s) in `document`
    kind: str = ""                    # passkey: "number" or "word" value; babi: "qa1"


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
class Haystack:
    """The blocks every sample competes with: `[N, S, r, Hkv, D]` and their texts."""
    blocks: torch.Tensor
    texts: list[str] = field(default_factory=list)


# ---- samples ----------------------------------------------------------------------------------------

def passages(text: str, tokenizer, tokens: int, count: int, skip: int, rng: random.Random) -> list[str]:
    """`count` passages of about `tokens` tokens from `text` after its first `skip` characters, cut at
    sentence ends (so a needle can go between sentences)."""
    text = re.sub(r"\s+", " ", text[skip:])
    chars = max(16, int(tokens * len(text[:20000]) / max(1, len(tokenizer(text[:20000])["input_ids"]))))
    out = []
    for _ in range(count):
        start = rng.randrange(0, max(1, len(text) - 2 * chars))
        start = text.find(". ", start) + 2 if text.find(". ", start) >= 0 else start
        end = text.rfind(". ", start, start + chars)
        out.append(text[start:end + 1 if end > start else start + chars].strip())
    return out


def insert(passage: str, facts: list[str], rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """Put `facts` in order between sentences of `passage` at random places; return the text and each
    fact's character span."""
    cuts = [m.end() for m in _SENTENCE_END.finditer(passage)] or [len(passage)]
    places = sorted(rng.choice(cuts) for _ in facts)
    out, spans, last = "", [], 0
    for place, fact in zip(places, facts, strict=True):
        out += passage[last:place]
        out += "" if out.endswith(" ") or not out else " "
        spans.append((len(out), len(out) + len(fact)))
        out += fact + " "
        last = place
    return out + passage[last:].lstrip(), spans


def passkey_samples(split: str, count: int, novel: str, tokenizer, doc_tokens: int,
                    rng: random.Random) -> list[Sample]:
    templates, words = PASSKEY_TEMPLATES[split], VALUE_WORDS[split]
    texts = passages(novel, tokenizer, doc_tokens, count, len(novel) // 2, rng)
    out = []
    for i, passage in enumerate(texts):
        needle, question, kind = templates[i % len(templates)]
        value = str(rng.randrange(1000, 10000)) if kind == "number" else rng.choice(words)
        document, spans = insert(passage, [needle.format(v=value)], rng)
        out.append(Sample("passkey", document, question, spans, kind))
    return out


def babi_samples(split: str, count: int, novel: str, tokenizer, doc_tokens: int, rng: random.Random,
                 data_dir: Path, max_facts: int = 4) -> list[Sample]:
    """qa1 questions whose supporting fact is among the story's last `max_facts` lines."""
    files = sorted((data_dir / "babi").glob(BABI[split]))
    if not files:
        raise L2MError(f"no bAbI file {BABI[split]} in {data_dir / 'babi'}")
    questions = [q for q in parse_babi(files[0]) if all(i >= len(q.story) - max_facts for i in q.supporting)]
    picked = rng.sample(questions, min(count, len(questions)))
    texts = passages(novel, tokenizer, doc_tokens, len(picked), len(novel) // 2, rng)
    out = []
    for q, passage in zip(picked, texts, strict=True):
        first = max(0, len(q.story) - max_facts)
        document, spans = insert(passage, q.story[first:], rng)
        out.append(Sample("babi", document, q.question, [spans[i - first] for i in q.supporting], "qa1"))
    return out


def make_samples(split: str, per_family: int, tokenizer, doc_tokens: int = 192, seed: int = 0,
                 data_dir: Path | None = None) -> list[Sample]:
    """`per_family` samples of each family for `split` ("train" or "test")."""
    data_dir = data_dir or default_data_dir()
    novel = read_novel(data_dir, split)
    rng = random.Random(f"{seed}-{split}")
    return (passkey_samples(split, per_family, novel, tokenizer, doc_tokens, rng)
            + babi_samples(split, per_family, novel, tokenizer, doc_tokens, rng, data_dir))


def read_novel(data_dir: Path, split: str) -> str:
    path = data_dir / "haystack" / NOVELS[split]
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise L2MError(f"haystack novel not found: {path} (set L2M_DATA to the data folder)") from None


# ---- features ---------------------------------------------------------------------------------------

def ingest_haystack(memory: Memory, novel: str, tokens: int, part_tokens: int = 512, skip: int = 2000) -> None:
    """The first `tokens` tokens of `novel` after `skip` characters, as documents of `part_tokens` tokens."""
    ids = memory.tokenizer(novel[skip:], add_special_tokens=False)["input_ids"][:tokens]
    for i in range(0, len(ids), part_tokens):
        memory.ingest_document(memory.tokenizer.decode(ids[i:i + part_tokens]), f"haystack/{i // part_tokens:04d}")


def haystack_features(memory: Memory, head: AddressHead) -> Haystack:
    ids, stack = memory.reprs.stacked()
    return Haystack(stack[head.layers].transpose(0, 1).contiguous(), [memory.block_text(b) for b in ids])


def example(memory: Memory, head: AddressHead, sample: Sample, source: str = "sample",
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


def features(memory: Memory, head: AddressHead, samples: list[Sample],
             progress: Callable[[int, int], None] | None = None) -> list[Example]:
    out = []
    for i, sample in enumerate(samples):
        out.append(example(memory, head, sample)[0])
        if progress:
            progress(i + 1, len(samples))
    return out


# ---- training and evaluation ------------------------------------------------------------------------

def _batch(examples: list[Example], haystack: Haystack, shared_store: bool = False) -> tuple:
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


def train(head: AddressHead, examples: list[Example], haystack: Haystack, steps: int = 300, batch_size: int = 16,
          lr: float = 3e-3, temperature: float = 1.0, weight_decay: float = 0.01, seed: int = 0,
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


def candidates(examples: list[Example], haystack: Haystack, i: int, extra: int = 0) -> tuple[torch.Tensor, list]:
    """Example i's candidate blocks `[N, S, r, Hkv, D]` and texts: the haystack (indices `0..H-1`), its own
    document (`H..`), then the documents of `extra` distractor examples."""
    docs = [examples[i], *(examples[j] for j in distractors(examples, i, extra))]
    return (torch.cat([haystack.blocks, *(e.blocks for e in docs)]),
            haystack.texts + [t for e in docs for t in e.texts])


@torch.no_grad()
def head_rankings(head: AddressHead, examples: list[Example], haystack: Haystack, extra: int = 0) -> list[list[int]]:
    """Per example, candidate indices best first (see `candidates`)."""
    out = []
    for i, e in enumerate(examples):
        bank = candidates(examples, haystack, i, extra)[0].transpose(0, 1)
        scores = head.scores(e.question_keys.float(), bank)
        out.append(torch.argsort(scores, descending=True, stable=True).tolist())
    return out


def bm25_rankings(examples: list[Example], haystack: Haystack, extra: int = 0) -> list[list[int]]:
    """Per example, BM25's candidate indices best first (only blocks sharing a word with the question)."""
    out = []
    for i, e in enumerate(examples):
        index = LexicalIndex()
        texts = candidates(examples, haystack, i, extra)[1]
        for j, text in enumerate(texts):
            index.add(j, text, "")
        out.append(index.top(e.question, len(texts)))
    return out


def positives(examples: list[Example], haystack: Haystack) -> list[set[int]]:
    n = haystack.blocks.shape[0]
    return [{n + j for j in e.positives} for e in examples]


def recall_at(rankings: list[list[int]], wanted: list[set[int]], ks: tuple[int, ...] = (1, 2, 4, 8)) -> dict:
    """Share of examples with a positive block among the first k of its ranking (examples without a
    positive count as misses, so no sample is silently dropped)."""
    n = max(1, len(rankings))
    return {f"@{k}": round(sum(bool(set(r[:k]) & w) for r, w in zip(rankings, wanted, strict=True)) / n, 4)
            for k in ks}


def rankings(examples: list[Example], haystack: Haystack, heads: dict[str, AddressHead], extra: int = 0,
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


def evaluate(examples: list[Example], haystack: Haystack, heads: dict[str, AddressHead],
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
