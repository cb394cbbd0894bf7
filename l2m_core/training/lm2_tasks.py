"""Training and evaluation tasks whose answer lies segments before the question.

An episode is a batch of examples cut into segments of at most `segment_len` tokens; the question and its
answer always sit in the last segment, alone, so a model that sees one segment at a time can answer only
through its memory. Examples with fewer segments are padded at the front with empty segments (which
leave the memory as it is), so every example's question segment is the episode's last.

- `KeyValueRecall`: "a3 f7 c1 ..." in segment 0, random filler segments, then a segment "?f" -> "7".
- `BabiTask`: bAbI qa1-qa5 stories, sentence-aligned over segments, then "Question: ...\nAnswer:" -> answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from l2m_core.errors import L2MError
from l2m_core.lm2.attach import DEFAULT_QUESTION_TEMPLATE
from l2m_core.training.data import BabiQuestion, babi_file, default_data_dir, read_babi

IGNORE = -100
EVAL_SEED = 1_000_003


@dataclass
class Episode:
    input_ids: torch.Tensor       # (B, S, L)
    attention_mask: torch.Tensor  # (B, S, L) bool
    labels: torch.Tensor          # (B, S, L); IGNORE where nothing is predicted
    support: torch.Tensor         # (B, S, L) bool: tokens of the facts the answer rests on
    fact_ids: torch.Tensor        # (B, S, L) long: 1.. numbers each fact of an example, 0 elsewhere

    def to(self, device: torch.device | str) -> Episode:
        return Episode(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.support,
                                                 self.fact_ids)))

    @property
    def num_segments(self) -> int:
        return self.input_ids.shape[1]


@dataclass
class Segment:
    ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    support: list[bool] = field(default_factory=list)
    facts: list[int] = field(default_factory=list)

    def add(self, ids: list[int], *, answer: bool = False, support: bool = False, fact: int = 0) -> Segment:
        """Append tokens: the answer (labelled), or a fact (`fact` >= 1 numbers it; `support` if asked for)."""
        self.ids += ids
        self.labels += ids if answer else [IGNORE] * len(ids)
        self.support += [support] * len(ids)
        self.facts += [fact] * len(ids)
        return self


def collate(examples: list[list[Segment]], segment_len: int, pad_id: int) -> Episode:
    """Stack examples into one episode: segments right-padded, missing leading segments empty."""
    count = max(len(ex) for ex in examples)
    empty = Segment()
    rows = [[empty] * (count - len(ex)) + list(ex) for ex in examples]
    for seg in (seg for row in rows for seg in row):
        if len(seg.ids) > segment_len:
            raise ValueError(f"segment of {len(seg.ids)} tokens exceeds segment_len {segment_len}")

    def grid(values: Callable[[Segment], list], pad) -> list:
        return [[values(seg) + [pad] * (segment_len - len(seg.ids)) for seg in row] for row in rows]

    return Episode(
        torch.tensor(grid(lambda seg: seg.ids, pad_id), dtype=torch.long),
        torch.tensor(grid(lambda seg: [True] * len(seg.ids), False), dtype=torch.bool),
        torch.tensor(grid(lambda seg: seg.labels, IGNORE), dtype=torch.long),
        torch.tensor(grid(lambda seg: seg.support, False), dtype=torch.bool),
        torch.tensor(grid(lambda seg: seg.facts, 0), dtype=torch.long),
    )


class Task:
    """A source of episodes. Subclasses build one example (`_example`); this class batches them."""

    name: str = "task"
    question_template: str = DEFAULT_QUESTION_TEMPLATE

    def __init__(self, tokenizer: PreTrainedTokenizerBase, segment_len: int):
        self.tokenizer, self.segment_len = tokenizer, segment_len
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def episode(self, batch: int, seed: int, split: str = "train") -> Episode:
        """A reproducible batch: the same (seed, split) always gives the same episode."""
        rng = random.Random(f"{self.name}|{split}|{seed}")
        return collate([self._example(rng, split) for _ in range(batch)], self.segment_len, self.pad_id)

    def eval_episodes(self, examples: int, batch: int) -> list[Episode]:
        sizes = [min(batch, examples - start) for start in range(0, examples, batch)]
        return [self.episode(n, EVAL_SEED + i, "test") for i, n in enumerate(sizes)]

    def _example(self, rng: random.Random, split: str) -> list[Segment]:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


class KeyValueRecall(Task):
    """Facts `key value` in the first segment, `gap` filler segments, then the query key and its value."""

    name = "kv"
    question_template = "?{question}"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, segment_len: int = 12, gap: int = 2, facts: int = 2,
                 keys: str = "abcdefgh", values: str = "0123456789", filler: str = "mnopqrstuvwxyz"):
        super().__init__(tokenizer, segment_len)
        if facts > len(keys) or 3 * facts > segment_len or segment_len < 3:
            raise L2MError(f"{facts} facts do not fit {len(keys)} keys and segments of {segment_len} tokens")
        self.gap, self.facts = gap, facts
        self.keys, self.values, self.filler = ([self._one_token(c) for c in chars] for chars in (keys, values, filler))
        self.space = self._one_token(" ")
        self.query = self._one_token("?")

    @property
    def chance(self) -> float:
        return 1 / len(self.values)

    def _one_token(self, text: str) -> int:
        ids = self.encode(text)
        if len(ids) != 1:
            raise L2MError(f"the key-value task needs single-token symbols; {text!r} is {len(ids)} tokens")
        return ids[0]

    def _noise(self, rng: random.Random, n: int) -> list[int]:
        return [rng.choice(self.filler) for _ in range(n)]

    def _example(self, rng: random.Random, split: str) -> list[Segment]:
        keys = rng.sample(self.keys, self.facts)
        values = [rng.choice(self.values) for _ in keys]
        asked = rng.randrange(self.facts)
        facts = Segment()
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            facts.add([k, v], support=i == asked, fact=i + 1).add([self.space])
        facts.add(self._noise(rng, self.segment_len - len(facts.ids)))
        gaps = [Segment().add(self._noise(rng, self.segment_len)) for _ in range(self.gap)]
        question = Segment().add([self.query, keys[asked]]).add([values[asked]], answer=True)
        return [facts, *gaps, question]


class BabiTask(Task):
    """bAbI task `qa{number}`: story sentences packed into segments, the question alone in the last.

    A story longer than `max_segments - 1` segments keeps its latest sentences; the example is dropped if
    that would cut a supporting sentence.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, number: int, segment_len: int = 64,
                 max_segments: int = 8, data_dir: Path | None = None):
        super().__init__(tokenizer, segment_len)
        if number not in range(1, 6):
            raise L2MError(f"bAbI task qa{number} is not available; choose qa1 to qa5")
        self.name, self.number = f"babi-qa{number}", number
        self.max_segments = max_segments
        self.folder = (data_dir or default_data_dir()) / "babi"
        self._splits: dict[str, list[list[Segment]]] = {}
        self._sentences: dict[str, list[int]] = {}
        self._file("train")  # fail early on a missing data folder

    def examples(self, split: str) -> list[list[Segment]]:
        """Every question of the split that fits, as segments (built on first use)."""
        if split not in self._splits:
            built = (self._segments(q) for q in read_babi(self._file(split)))
            self._splits[split] = [ex for ex in built if ex is not None]
        return self._splits[split]

    def _file(self, split: str) -> Path:
        return babi_file(self.folder, f"qa{self.number}", split)

    def _sentence(self, text: str) -> list[int]:
        if text not in self._sentences:
            self._sentences[text] = self.encode(text)
        return self._sentences[text]

    def _segments(self, q: BabiQuestion) -> list[Segment] | None:
        """Fill segments backwards from the question, whole sentences only, until the story or room runs out."""
        prompt = self.encode(self.question_template.format(question=q.question))
        answer = self.encode(" " + q.answer)
        if len(prompt) + len(answer) > self.segment_len:
            return None
        chunks: list[list[int]] = [[]]  # sentence indices per segment, last segment first
        used = 0
        for i in range(len(q.story) - 1, -1, -1):
            size = len(self._sentence(" " + q.story[i]))
            if size > self.segment_len:
                return None
            if used + size > self.segment_len:
                if len(chunks) == self.max_segments - 1:
                    break
                chunks.append([])
                used = 0
            chunks[-1].insert(0, i)
            used += size
        kept = {i for chunk in chunks for i in chunk}
        if not set(q.supporting) <= kept:
            return None
        segments = []
        for chunk in reversed(chunks):
            segment = Segment()
            for i in chunk:
                segment.add(self._sentence(" " + q.story[i]), support=i in q.supporting, fact=i + 1)
            segments.append(segment)
        return [*segments, Segment().add(prompt).add(answer, answer=True)]

    def _example(self, rng: random.Random, split: str) -> list[Segment]:
        return rng.choice(self.examples(split))


def make_task(name: str, tokenizer: PreTrainedTokenizerBase, segment_len: int | None = None, **kwargs) -> Task:
    """`kv` or `babi-qa1`..`babi-qa5` (also `qa1`..`qa5`)."""
    match = re.fullmatch(r"(?:babi-)?qa([1-5])", name)
    if match:
        return BabiTask(tokenizer, int(match.group(1)), segment_len or 64, **kwargs)
    if name == "kv":
        return KeyValueRecall(tokenizer, segment_len or 12, **kwargs)
    raise L2MError(f"unknown task {name!r}; choose kv or babi-qa1..babi-qa5")
