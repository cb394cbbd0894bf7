"""Reader training data from any store: questions whose answers are spans of the stored text.

Kinds (each sample names the block holding its evidence, and its document, the unit of the split):
- `name`: a definition described by its docstring or first body line -> its name ("Which function ...?");
- `file`: "Which file defines NAME?" -> the file's path;
- `article`: "Which Article says <fragment of one of its sentences>?" -> "Article N";
- `cloze`: a sentence with one number or long word blanked -> that word;
- `passkey`: a novel passage with a pass key inserted (training/data.py), ingested as its own document.

Definitions and sections come from `Memory.enclosing` (set by the agent from the corpus index); without it
only cloze samples are made. Train and held-out samples never share a document. Deterministic for a seed.

A sample's answer is the bare span; `oracle_targets` makes it instead the model's own reply with the evidence
pasted into the prompt where memory is read (kept only when that reply holds the span). A reader trained on
bare spans answered the development sets' plain questions with a few words and lost what the plain read path
answered in a sentence (bench/qa/README.md); trained on the oracle's replies, it learns to read memory as the
model reads pasted text, in the words it answers with.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from l2m_core.errors import L2MError
from l2m_core.generation import generate_batch
from l2m_core.memory import Memory, pasted_prompt
from l2m_core.training.data import default_data_dir, passkey_samples, read_novel

PASSKEY_PREFIX = "reader-passkey/"
_SENTENCE = re.compile(r"(?:(?<=[.!?]\s)|(?<=\n)|^)[A-Z0-9][^.!?]{29,239}[.!?](?=\s|$)")
_PROSE = re.compile(r"[\w\s,;'’\"-]+[.!?]")  # a sentence of words, not code
_BLANKABLE = re.compile(r"\b(?:\d[\d.,]*\d|\d|[A-Za-z][a-z]{6,})\b")
_ARTICLE = re.compile(r"^Article \d+\w*$")
_ARTICLE_LINE = re.compile(r"^(Article \d+\w*)[ \t]*$", re.M)


@dataclass(frozen=True)
class ReaderSample:
    kind: str       # name | file | article | cloze | passkey
    question: str
    answer: str     # a span of the stored text (or the source path, for `file`)
    source: str     # the document holding the evidence
    evidence: int   # the block holding it


@dataclass(frozen=True)
class ReaderSplit:
    train: list[ReaderSample]
    held_out: list[ReaderSample]
    held_out_sources: list[str]


def corpus_samples(memory: Memory, seed: int = 0, per_document: int = 8) -> list[ReaderSample]:
    """Up to `per_document` samples from each stored document (passkey documents excepted)."""
    by_source: dict[str, list[int]] = {}
    for block_id, meta in sorted(memory.meta.items(), key=lambda item: (item[1].doc_id, item[1].seq)):
        if not meta.source.startswith(PASSKEY_PREFIX):
            by_source.setdefault(meta.source, []).append(block_id)
    where = memory.enclosing(list(memory.meta)) if memory.enclosing is not None else {}
    out = []
    for source in sorted(by_source):
        rng = random.Random(f"{seed}-{source}")
        found_texts = memory.block_texts(by_source[source])
        texts = {b: found_texts[b] for b in by_source[source]}  # in reading order
        found = _definitions(source, texts, where) + _articles(source, texts, where, rng)
        rng.shuffle(found)
        clozes = _clozes(source, texts, rng)
        out += (found + clozes)[:per_document]  # definitions and Articles first, then blanked words
    return out


def _definitions(source: str, texts: dict[int, str], where: dict) -> list[ReaderSample]:
    """`name` and `file` samples for each definition whose `def`/`class` line lies in its heading block and
    the line after it there or in the next block."""
    out, seen = [], set()
    order = list(texts)
    for block_id in texts:
        e = where.get(block_id)
        if e is None or e.heading_block not in texts or e.label in seen:
            continue
        seen.add(e.label)
        name = e.label.rsplit(".", 1)[-1]
        at = order.index(e.heading_block)
        lines = "".join(texts[b] for b in order[at:at + 2]).splitlines()
        for i, line in enumerate(lines[:-1]):
            m = re.match(rf"\s*(?:async\s+)?(def|class)\s+{re.escape(name)}\b", line)
            described = next((x.strip().strip("\"'").strip() for x in lines[i + 1:] if x.strip()), "")
            if m and len(described) >= 12:
                what = "class" if m.group(1) == "class" else "function"
                out.append(ReaderSample("name", f'Which {what} is described by "{described}"?', name, source,
                                        e.heading_block))
                out.append(ReaderSample("file", f"Which file defines {name}?", source, source, e.heading_block))
                break
    return out


def _articles(source: str, texts: dict[int, str], where: dict, rng: random.Random) -> list[ReaderSample]:
    """One `article` sample per Article: 6 to 10 words of one of its blocks. A block holding an Article's
    heading gives only words after it, and only when that heading is the Article the index places the
    block in (its middle line's); words cut at the block's edges are left out."""
    out, seen = [], set()
    for block_id, text in texts.items():
        e = where.get(block_id)
        if e is None or not _ARTICLE.match(e.label) or e.label in seen:
            continue
        headings = list(_ARTICLE_LINE.finditer(text))
        if headings and headings[-1].group(1) != e.label:
            continue
        words = text[headings[-1].end():].split() if headings else text.split()[1:]
        words = words[:-1]
        if len(words) < 6:
            continue
        seen.add(e.label)
        start = rng.randrange(0, max(1, len(words) - 10))
        fragment = " ".join(words[start:start + 10]).strip(".,;:")
        out.append(ReaderSample("article", f'Which Article says "{fragment}"?', e.label, source, block_id))
    return out


def _clozes(source: str, texts: dict[int, str], rng: random.Random) -> list[ReaderSample]:
    """Sentences (whole inside one block) with one number or long word blanked, in random order."""
    out = []
    for block_id, text in texts.items():
        for sentence in _sentences(text):
            words = list(_BLANKABLE.finditer(sentence))
            if not words:
                continue
            w = rng.choice(words)
            blanked = f"{sentence[:w.start()]}____{sentence[w.end():]}"
            out.append(ReaderSample("cloze", f'Which word fills the blank: "{blanked}"?', w.group(), source, block_id))
    rng.shuffle(out)
    return out


def _sentences(text: str) -> list[str]:
    """The prose sentences wholly inside `text` (never across a blank line, so not into a heading), on one
    line each."""
    found = (" ".join(m.group().split()) for para in re.split(r"\n\s*\n", text) for m in _SENTENCE.finditer(para))
    return [s for s in found if _PROSE.fullmatch(s) and len(s.split()) >= 6]


def passkey_reader_samples(memory: Memory, count: int, seed: int = 0, data: Path | None = None,
                           doc_tokens: int = 192) -> list[ReaderSample]:
    """`count` pass-key documents (training/data.py) ingested into `memory`, one per sample: ingest into a
    copy of a user's store (`Memory.fork`), not into the store itself."""
    if count <= 0:
        return []
    novel = read_novel(data or default_data_dir(), "train")
    needles = passkey_samples("train", count, novel, memory.tokenizer, doc_tokens, random.Random(f"{seed}-passkey"))
    out = []
    for i, needle in enumerate(needles):
        source = f"{PASSKEY_PREFIX}{i:04d}"
        spans = memory.ingest_document(needle.document, source)
        at = needle.document.index(needle.answer, needle.support[0][0])  # the block holding the value itself
        evidence = next(s.block_id for s in spans
                        if memory.meta[s.block_id].char_start <= at < memory.meta[s.block_id].char_end)
        out.append(ReaderSample("passkey", needle.question, needle.answer, source, evidence))
    return out


def oracle_targets(memory: Memory, samples: list[ReaderSample], max_new_tokens: int = 40,
                   progress: Callable[[int, int], None] | None = None,
                   batch_size: int = 8) -> tuple[list[ReaderSample], int]:
    """The samples with each answer replaced by the model's greedy reply to the question with the evidence
    block and its neighbours pasted where memory goes (under their source's name, as bench/qa_eval.py's
    oracle pastes them), where that reply is complete (ended by a stop token, not the token limit) and contains
    the span (case-insensitive); the others, and pass-key samples, keep the span. Returns them and how many
    were replaced. Replies are generated `batch_size` at a time; `progress(done, total)` follows each batch."""
    asked = [i for i, sample in enumerate(samples) if sample.kind != "passkey"]
    prompts = [memory.tokenizer(_oracle_prompt(memory, samples[i]), add_special_tokens=False).input_ids
               for i in asked]
    on_batch = None if progress is None else (lambda done: progress(done, len(prompts)))
    replies = generate_batch(memory.lm, prompts, memory.stop_ids, max_new_tokens, batch_size, on_batch)
    out = list(samples)
    for i, reply in zip(asked, replies, strict=True):
        text = memory.tokenizer.decode(reply.tokens, skip_special_tokens=True).strip() if reply.stop is not None else ""
        if text and samples[i].answer.lower() in text.lower():
            out[i] = replace(samples[i], answer=text)
    return out, sum(a is not b for a, b in zip(out, samples, strict=True))


def _oracle_prompt(memory: Memory, sample: ReaderSample) -> str:
    """The question's prompt with its evidence block and the blocks either side pasted where memory is read."""
    meta = memory.meta[sample.evidence]
    near = [b for seq in (meta.seq - 1, meta.seq, meta.seq + 1)
            if (b := memory.by_position.get((meta.doc_id, seq))) is not None]
    texts = memory.block_texts(near)
    return pasted_prompt(memory.tokenizer, sample.question, f"[{sample.source}]\n" + "".join(texts[b] for b in near))


def split_by_document(samples: list[ReaderSample], held_out: float = 0.2, seed: int = 0) -> ReaderSplit:
    """Hold out a share of the documents (at least one, when there are two or more) with all their samples."""
    sources = sorted({s.source for s in samples})
    if len(sources) < 2:
        raise L2MError(f"reader training needs samples from at least two documents (found {len(sources)}): "
                       "ingest more of the corpus")
    random.Random(f"{seed}-split").shuffle(sources)
    apart = set(sources[:max(1, round(held_out * len(sources)))])
    return ReaderSplit([s for s in samples if s.source not in apart], [s for s in samples if s.source in apart],
                       sorted(apart))
