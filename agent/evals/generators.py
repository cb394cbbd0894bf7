"""Samples of our own for long-context evaluations: passkey, BABILong-style bAbI stories, RULER needles.

All samples of one (task, variant, length) share one haystack: a prefix of a filler corpus, cut at a
sentence end so that the haystack plus the longest sample's insertions fit the target token count. The
samples differ only in what is inserted where, so the memory method can ingest a haystack once and
re-ingest only the parts that hold a sample's insertions. Lengths and depths are counted in the
model's tokens. Stories, keys and values come from the seed and the sample's index, never the length:
sample i asks the same question at every length, which makes accuracy curves comparable.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import ClassVar

from transformers import PreTrainedTokenizerBase

from l2m_core.errors import L2MError
from l2m_core.training.data import (
    BabiQuestion,
    Haystack,
    Insertion,
    babi_file,
    data_dir,
    insert,
    load_haystack,
    read_babi,
)


@dataclass
class Draft:
    """A sample before placement: what to insert and what to ask (it does not depend on the length)."""

    needles: list[str]
    question: str
    answers: list[str]
    instruction: str
    template: str
    keys: list[bool] | None = None      # None: every needle is needed
    depths: list[float] | None = None   # None: scattered in order over the haystack (BABILong)
    answer_prefix: str = ""
    max_new_tokens: int = 32
    labels: tuple[str, ...] = ()


@dataclass
class Sample:
    """One question over one long context, with everything needed to prompt, patch and score it."""

    task: str
    variant: str
    length: int
    index: int
    haystack: str = field(repr=False)
    insertions: list[Insertion]
    context: str = field(repr=False)
    offsets: list[int]          # where each insertion starts in the context
    depths: list[float]         # each insertion's depth in the context, in tokens (0..1)
    context_tokens: int
    question: str
    answers: list[str]
    instruction: str
    template: str               # with {instruction}, {context} and {question}
    answer_prefix: str = ""
    max_new_tokens: int = 32
    labels: tuple[str, ...] = ()

    @property
    def key_offsets(self) -> list[int]:
        return [o for o, ins in zip(self.offsets, self.insertions, strict=True) if ins.key]

    def prompt(self, context: str | None = None) -> str:
        """The full prompt text, over the sample's context or a shorter one (truncated, retrieved)."""
        return self.template.format(instruction=self.instruction, question=self.question,
                                    context=self.context if context is None else context)


class TaskGenerator(ABC):
    """Places a task's drafts into a shared haystack; a subclass writes one `_draft` per variant."""

    task: ClassVar[str]
    variants: ClassVar[tuple[str, ...]]
    default_haystack: ClassVar[str] = "novel"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, data: str | Path | None = None, seed: int = 0,
                 haystack: str | None = None, depths: Sequence[float] | None = None):
        self.tokenizer = tokenizer
        self.data = data_dir(data)
        self.seed = seed
        self.haystack_kind = haystack or self.default_haystack
        self.depths = list(depths) if depths else None
        self._haystack: Haystack | None = None

    def samples(self, variant: str, length: int, count: int) -> list[Sample]:
        """`count` samples of `variant` whose contexts hold about `length` tokens (0: insertions only)."""
        self.check_variant(variant)
        drafts = [self._draft(variant, i, random.Random(self._key(variant, i)), self._depth(i, count))
                  for i in range(count)]
        sizes = [[self._count(" " + text) for text in d.needles] for d in drafts]  # spaced as inserted
        reserve = max((sum(s) for s in sizes), default=0)
        text = self._haystack_prefix(length - reserve) if length else ""
        return [self._place(variant, length, i, d, s, text) for i, (d, s) in enumerate(zip(drafts, sizes, strict=True))]

    def check_variant(self, variant: str) -> None:
        if variant not in self.variants:
            raise L2MError(f"unknown {self.task} variant {variant!r}; choose from {', '.join(self.variants)}")

    @abstractmethod
    def _draft(self, variant: str, index: int, rng: random.Random, depth: float) -> Draft:
        """The needles and question of sample `index`; `depth` is where a single needle should go."""

    def _key(self, variant: str, index: int) -> str:
        return f"{self.seed}:{self.task}:{variant}:{index}"

    def _depth(self, index: int, count: int) -> float:
        if self.depths:
            return self.depths[index % len(self.depths)]
        return 0.5 if count == 1 else 0.1 + 0.8 * index / (count - 1)

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _haystack_prefix(self, tokens: int) -> str:
        if tokens <= 0:
            return ""
        if self._haystack is None or len(self._haystack) <= tokens:
            grown = max(tokens + 1, 2 * len(self._haystack or ()))
            self._haystack = load_haystack(self.haystack_kind, self.tokenizer, grown, self.data)
        return self._haystack.prefix(tokens)

    def _place(self, variant: str, length: int, index: int, draft: Draft, sizes: list[int], text: str) -> Sample:
        hay, end = self._haystack, len(text)
        if not text:
            offsets = [0] * len(draft.needles)
        elif draft.depths is None:
            rng = random.Random(f"{self._key(variant, index)}:{length}")
            ends = hay.sentence_ends(end)
            offsets = sorted(rng.choice(ends) for _ in draft.needles)
        else:
            offsets = [hay.at_depth(d, end) for d in draft.depths]
        keys = draft.keys or [True] * len(draft.needles)
        insertions = [Insertion(t, o, k) for t, o, k in zip(draft.needles, offsets, keys, strict=True)]
        context, starts = insert(text, insertions)
        hay_tokens = hay.tokens_before(end) if text else 0
        total = hay_tokens + sum(sizes)
        before = [(hay.tokens_before(ins.offset) if text else 0)
                  + sum(sizes[j] for j in range(len(sizes)) if starts[j] < starts[i])
                  for i, ins in enumerate(insertions)]
        return Sample(
            task=self.task, variant=variant, length=length, index=index, haystack=text, insertions=insertions,
            context=context, offsets=starts, depths=[b / max(total, 1) for b in before], context_tokens=total,
            question=draft.question, answers=draft.answers, instruction=draft.instruction,
            template=draft.template, answer_prefix=draft.answer_prefix, max_new_tokens=draft.max_new_tokens,
            labels=draft.labels)


class PasskeyGenerator(TaskGenerator):
    """The classic passkey retrieval: a 5-digit number hidden at a depth in repeated filler.

    The question asks for the number outright: asked only "What is the pass key?", the default model,
    even with the needle's block in every layer's read set, tends to talk about the words "pass key".
    """

    task = "passkey"
    variants = ("passkey",)
    default_haystack = "noise"
    INSTRUCTION = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                   "I will quiz you about the important information there.")

    def _draft(self, variant: str, index: int, rng: random.Random, depth: float) -> Draft:
        key = str(rng.randint(10000, 99999))
        return Draft(
            needles=[f"The pass key is {key}. Remember it. {key} is the pass key."],
            question="What is the pass key? Answer with the number.", answers=[key], instruction=self.INSTRUCTION,
            template="{instruction}\n\n{context}\n\n{question}", depths=[depth],
            answer_prefix="The pass key is", max_new_tokens=12)


ADJECTIVES = ("amber", "brave", "calm", "dusty", "eager", "fancy", "gentle", "hollow", "icy", "jolly", "kind",
              "lively", "misty", "noble", "odd", "proud", "quiet", "rapid", "silent", "tidy", "upbeat", "vivid",
              "wooden", "young", "zesty", "bitter", "crisp", "golden", "humble", "narrow")
NOUNS = ("anchor", "barrel", "candle", "dragon", "engine", "falcon", "garden", "harbor", "island", "jacket",
         "kettle", "ladder", "meadow", "needle", "orchard", "pepper", "quarry", "ribbon", "saddle", "thimble",
         "umbrella", "violin", "wagon", "yarn", "zipper", "basket", "compass", "lantern", "mirror", "pebble")
RULER_DEPTHS = tuple(round(100 * i / 39) / 100 for i in range(40))  # RULER's 40 evenly spaced depths


class NiahGenerator(TaskGenerator):
    """RULER's needle variants on novel text: words as keys, 7-digit numbers as values.

    single: one needle at the sample's depth. multikey: that needle among three with other keys.
    multivalue: four values for one key. multiquery: four keys, all asked. Templates follow RULER,
    with its singular rewrite when one value is asked for.
    """

    task = "niah"
    variants = ("single", "multikey", "multivalue", "multiquery")
    NEEDLE = "One of the special magic numbers for {key} is: {value}."
    TEXTS = (  # instruction, question, answer prefix
        "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the numbers afterwards.",
        "What are all the special magic numbers for {query} mentioned in the provided text?",
        "The special magic numbers for {query} mentioned in the provided text are")

    def _draft(self, variant: str, index: int, rng: random.Random, depth: float) -> Draft:
        n_keys = 1 if variant in ("single", "multivalue") else 4
        n_values = 4 if variant == "multivalue" else 1
        names = [f"{a}-{n}" for a, n in zip(rng.sample(ADJECTIVES, n_keys), rng.sample(NOUNS, n_keys), strict=True)]
        pairs = [(k, str(rng.randint(1_000_000, 9_999_999))) for k in names for _ in range(n_values)]
        queried = names if variant == "multiquery" else names[:1]
        if variant in ("single", "multikey"):
            others = [d for d in RULER_DEPTHS if abs(d - depth) > 0.05]
            depths = [depth, *rng.sample(others, len(pairs) - 1)]
        else:
            depths = rng.sample(RULER_DEPTHS, len(pairs))
        texts = self.TEXTS if variant in ("multivalue", "multiquery") else tuple(map(_singular, self.TEXTS))
        query = queried[0] if len(queried) == 1 else ", ".join(queried[:-1]) + f", and {queried[-1]}"
        instruction, question, prefix = (t.format(query=query) for t in texts)
        single = len(queried) * n_values == 1
        return Draft(
            needles=[self.NEEDLE.format(key=k, value=v) for k, v in pairs],
            keys=[k in queried for k, _ in pairs], answers=[v for k, v in pairs if k in queried],
            question=question, instruction=instruction, template="{instruction}\n{context}\n{question}",
            depths=depths, answer_prefix=prefix, max_new_tokens=24 if single else 64)


def _singular(text: str) -> str:
    """RULER's rewrite of its template when one value is asked for."""
    for plural, singular in (("Some", "A"), ("are all", "is"), ("are", "is"), ("numbers", "number")):
        text = text.replace(plural, singular)
    return text


@cache
def babilong_prompts(data: Path) -> dict:
    return json.loads((data / "babilong_prompts_qa1-5.json").read_text(encoding="utf-8"))


class BabilongGenerator(TaskGenerator):
    """BABILong-style samples: a bAbI qa1-qa5 story's facts scattered in order through novel text.

    Prompt texts (instruction, examples, answer format) and the answer labels are BABILong's own.
    """

    task = "babilong"
    variants = ("qa1", "qa2", "qa3", "qa4", "qa5")

    def _draft(self, variant: str, index: int, rng: random.Random, depth: float) -> Draft:
        stories = self._stories(variant)
        order = random.Random(f"{self.seed}:{variant}").sample(range(len(stories)), len(stories))
        q = stories[order[index % len(stories)]]
        prompts = babilong_prompts(self.data)
        texts = prompts["prompts"][variant]
        return Draft(
            needles=list(q.story), keys=[i in q.supporting for i in range(len(q.story))],
            question=q.question, answers=[q.answer],
            instruction="\n\n".join((texts["instruction"], texts["examples"], texts["post_prompt"])),
            template="{instruction}\n\n<context>\n{context}\n</context>\n\nQuestion: {question}",
            max_new_tokens=24, labels=tuple(prompts["task_labels"][variant]))

    def _stories(self, variant: str) -> tuple[BabiQuestion, ...]:
        return read_babi(babi_file(self.data / "babi", variant, "test"))



GENERATORS: dict[str, type[TaskGenerator]] = {g.task: g for g in (PasskeyGenerator, BabilongGenerator, NiahGenerator)}
