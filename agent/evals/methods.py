"""The methods compared on the same samples: the memory engine and three baselines on the same model.

`Method.answer` does the plumbing (timing, skips, errors) and each method writes `_answer`:
- `full`: the whole prompt, only where it fits the native window (else skipped, never scored 0);
- `truncate`: the last context tokens that fit the window;
- `rag`: BM25 over ~128-token chunks of the context, the top k pasted in, in their original order;
- `l2m`: the memory engine reading the haystack from a store (see `stores`).
Every reply says how much of what the answer needs the model could see (`visible`): for the baselines
the fraction of key needles in the text they kept; for l2m the share of the key needles' blocks (a
needle can straddle two) in each layer's read set, averaged over layers (the share addressed
lexically is in `detail`). Accuracy next to
`visible` tells retrieval misses from misreadings.
"""

from __future__ import annotations

import inspect
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rank_bm25 import BM25Okapi

from agent.evals.generators import Sample
from agent.evals.stores import BaseStores, part_source, patch, split_parts, sync
from l2m_core.errors import L2MError
from l2m_core.generation import GreedyDecoder
from l2m_core.loading import LoadedModel
from l2m_core.paths import l2m_home


@dataclass
class MethodOptions:
    """Knobs of the methods; the defaults are the published runs' settings."""

    top_k: int = 4                   # rag: chunks pasted into the prompt
    chunk_tokens: int = 128          # rag: tokens per chunk
    part_tokens: int = 512           # l2m: tokens per haystack document (a sample re-ingests the ones it changes)
    store_root: Path | None = None   # l2m: base stores (default $L2M_HOME/eval-stores)
    memory_settings: Any = None      # l2m: MemorySettings (None: the engine's defaults)
    memory_api: Any = None           # l2m: the Memory class (None: l2m_core.memory.Memory)
    hops: int = 1                    # l2m: reads per question (2+: the answer re-addresses memory)


@dataclass
class Reply:
    """What a method's `_answer` returns."""

    text: str
    prompt_tokens: int | None = None
    visible: float | None = None     # fraction of the key needles the model could read
    detail: dict = field(default_factory=dict)


@dataclass
class Prediction(Reply):
    """A reply with its status and wall time: `ok`, `skipped` (by design, not scored) or `error`."""

    status: str = "ok"
    note: str = ""
    seconds: float = 0.0


class Skip(Exception):
    """A sample this method does not answer by design (recorded as skipped, not as wrong)."""


class Method(ABC):
    """One way to answer a long-context sample with the model `lm`."""

    name: ClassVar[str]

    def __init__(self, lm: LoadedModel, options: MethodOptions | None = None):
        self.lm = lm
        self.options = options or MethodOptions()
        self.setup_seconds = 0.0  # one-off work outside `answer` timings (l2m: ingesting base stores)

    def answer(self, sample: Sample) -> Prediction:
        """Answer `sample`, timed; a skip or a failure becomes the prediction's status, not an exception.

        The time excludes one-off setup done during the call (it is counted in `setup_seconds`).
        """
        start, setup = time.perf_counter(), self.setup_seconds

        def elapsed() -> float:
            return time.perf_counter() - start - (self.setup_seconds - setup)

        try:
            reply = self._answer(sample)
        except Skip as exc:
            return Prediction("", status="skipped", note=str(exc), seconds=elapsed())
        except Exception as exc:  # one failing sample must not end a run of hours; the summary counts it
            note = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return Prediction("", status="error", note=note, seconds=elapsed())
        return Prediction(reply.text, reply.prompt_tokens, reply.visible, reply.detail, seconds=elapsed())

    @abstractmethod
    def _answer(self, sample: Sample) -> Reply:
        """The model's answer to `sample`."""

    def close(self) -> None:  # noqa: B027  (most methods hold nothing to release)
        """Release what the method holds (stores, caches)."""


class PromptMethod(Method):
    """A baseline: one chat prompt holding some of the context, answered by greedy decoding."""

    def __init__(self, lm: LoadedModel, options: MethodOptions | None = None):
        super().__init__(lm, options)
        self.window = lm.config.max_position_embeddings
        self.decoder = GreedyDecoder(lm)

    def _answer(self, sample: Sample) -> Reply:
        context, visible = self._context(sample)
        ids = self.prompt_ids(sample, context)
        if len(ids) + sample.max_new_tokens > self.window:
            raise Skip(f"exceeds window: {len(ids)} prompt tokens, window {self.window}")
        return Reply(self.decoder.generate(ids, sample.max_new_tokens), len(ids), visible)

    @abstractmethod
    def _context(self, sample: Sample) -> tuple[str, float]:
        """The context text the prompt carries, and the fraction of key needles inside it."""

    def prompt_ids(self, sample: Sample, context: str) -> list[int]:
        """The chat-template prompt over `context`, the assistant turn opened with the answer prefix."""
        tokenizer = self.lm.tokenizer
        text = tokenizer.apply_chat_template([{"role": "user", "content": sample.prompt(context)}],
                                             add_generation_prompt=True, tokenize=False)
        return tokenizer(text + sample.answer_prefix, add_special_tokens=False).input_ids

    def token_starts(self, text: str) -> list[int]:
        encoded = self.lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [start for start, _ in encoded["offset_mapping"]]


def _fraction(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 1.0


class Full(PromptMethod):
    """Plain full attention over the whole prompt, where it fits the native window."""

    name = "full"

    def _context(self, sample: Sample) -> tuple[str, float]:
        return sample.context, 1.0


class Truncate(PromptMethod):
    """The last context tokens that fit the native window beside the instruction and question."""

    name = "truncate"
    SEAM_TOKENS = 8  # re-tokenizing at the cut and the template seams can add a few tokens

    def _context(self, sample: Sample) -> tuple[str, float]:
        overhead = len(self.prompt_ids(sample, "")) + sample.max_new_tokens + self.SEAM_TOKENS
        budget = self.window - overhead
        if budget <= 0:
            raise Skip(f"exceeds window: instruction and question alone take {overhead} tokens")
        starts = self.token_starts(sample.context)
        if len(starts) <= budget:
            return sample.context, 1.0
        cut = starts[len(starts) - budget]
        return sample.context[cut:], _fraction([o >= cut for o in sample.key_offsets])


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class Rag(PromptMethod):
    """Retrieval-augmented re-prompting: BM25 over chunks of the context, top k in the prompt.

    A needle counts as visible when the retrieved text holds all of it (a chunk border can cut it).
    """

    name = "rag"

    def _context(self, sample: Sample) -> tuple[str, float]:
        starts = self.token_starts(sample.context)
        size = self.options.chunk_tokens
        bounds = [starts[i] for i in range(0, len(starts), size)] + [len(sample.context)]
        spans = list(zip(bounds, bounds[1:], strict=False))
        if len(spans) <= self.options.top_k:
            return sample.context, 1.0
        scores = BM25Okapi([words(sample.context[b:e]) for b, e in spans]).get_scores(words(sample.question))
        chosen: list[list[int]] = []  # the best chunks in context order, neighbours merged
        for i in sorted(sorted(range(len(spans)), key=lambda i: -scores[i])[:self.options.top_k]):
            if chosen and chosen[-1][1] == spans[i][0]:
                chosen[-1][1] = spans[i][1]
            else:
                chosen.append(list(spans[i]))
        text = "\n\n".join(sample.context[b:e].strip() for b, e in chosen)
        whole = [any(b <= o and o + len(ins.text) <= e for b, e in chosen)
                 for o, ins in zip(sample.offsets, sample.insertions, strict=True) if ins.key]
        return text, _fraction(whole)


class L2M(Method):
    """The memory engine: the haystack read from memory, the instruction and question kept local.

    Per sample: fork the base store of the sample's haystack, re-ingest the parts holding its
    insertions, ask, and check whether the key needles' blocks were addressed.
    """

    name = "l2m"

    def __init__(self, lm: LoadedModel, options: MethodOptions | None = None):
        super().__init__(lm, options)
        api, settings = self.options.memory_api, self.options.memory_settings
        if api is None:
            api, defaults = _engine()
            settings = settings or defaults
        root = self.options.store_root or l2m_home() / "eval-stores"
        self.stores = BaseStores(root, lm, api, settings)
        self._base: tuple[str, Any, dict[str, str], list[tuple[int, int]]] | None = None

    def _answer(self, sample: Sample) -> Reply:
        memory, have, spans = self._base_for(sample.haystack)
        patched = patch(sample.haystack, spans, sample.insertions)
        work = Path(tempfile.mkdtemp(prefix="fork-", dir=self.stores.root))
        clock = [time.perf_counter()]
        fork = None
        try:
            fork = memory.fork(work / "store")
            clock.append(time.perf_counter())
            patched_parts = sync(fork, have, patched.documents)
            clock.append(time.perf_counter())
            ans = self._ask(fork, sample)
            clock.append(time.perf_counter())
            needles = [_needle_blocks(fork, source, offset, len(ins.text))
                       for (source, offset), ins in zip(patched.locations, sample.insertions, strict=True) if ins.key]
        finally:
            if fork is not None:
                fork.close()
            shutil.rmtree(work, ignore_errors=True)
        lexical = _mean_read(needles, set(ans.lexical))
        layers = [_mean_read(needles, set(read)) for read in ans.read_set.values()]
        layer_share = sum(layers) / len(layers) if layers else 0.0
        fork_s, patch_s, ask_s = (round(b - a, 3) for a, b in zip(clock, clock[1:], strict=False))
        return Reply(ans.text, visible=layer_share, detail={
            "lexical": lexical, "layers": layer_share, "read_blocks": _read_size(ans.read_set),
            "patched_parts": patched_parts, "fork_s": fork_s, "patch_s": patch_s, "ask_s": ask_s})

    def _ask(self, memory: Any, sample: Sample) -> Any:
        """Ask the sample's question; the answer prefix goes along where the engine takes one.

        (Folding the prefix into the question instead was tried on the default model: it did not help.)
        """
        kwargs = {"instruction": sample.instruction, "max_new_tokens": sample.max_new_tokens, "hops": self.options.hops}
        if sample.answer_prefix and "answer_prefix" in inspect.signature(memory.ask).parameters:
            kwargs["answer_prefix"] = sample.answer_prefix
        return memory.ask(sample.question, **kwargs)

    def _base_for(self, haystack: str) -> tuple[Any, dict[str, str], list[tuple[int, int]]]:
        """The open base store of `haystack` (samples of one length share it; switching closes the last)."""
        if self._base is None or self._base[0] != haystack:
            self.close()
            start = time.perf_counter()
            encoded = self.lm.tokenizer(haystack, add_special_tokens=False, return_offsets_mapping=True)
            spans = split_parts(haystack, [s for s, _ in encoded["offset_mapping"]], self.options.part_tokens)
            memory, have = self.stores.open({part_source(i): haystack[b:e] for i, (b, e) in enumerate(spans)})
            self._base = (haystack, memory, have, spans)
            self.setup_seconds += time.perf_counter() - start
        return self._base[1:]

    def close(self) -> None:
        if self._base is not None:
            self._base[1].close()
            self._base = None


def _needle_blocks(memory: Any, source: str, offset: int, length: int) -> list[int | None]:
    """The blocks holding a needle's text (a needle can straddle a block border)."""
    points = [*range(offset, offset + length, 16), offset + length - 1]
    return list(dict.fromkeys(memory.block_at(source, p) for p in points))


def _mean_read(needles: list[list[int | None]], read: set[int]) -> float:
    """Over the needles, the mean fraction of each needle's blocks in `read`."""
    return _fraction([]) if not needles else sum(
        sum(b in read for b in blocks) / len(blocks) for blocks in needles) / len(needles)


def _read_size(read_set: dict) -> float:
    """Mean number of blocks read per layer."""
    return sum(map(len, read_set.values())) / len(read_set) if read_set else 0.0


def _engine() -> tuple[Any, Any]:
    """The memory engine's class and its default settings."""
    try:
        from l2m_core.memory import Memory
        from l2m_core.settings import MemorySettings
    except ImportError as exc:
        raise L2MError(f"the memory engine is not available ({exc}); leave l2m out of --methods") from exc
    return Memory, MemorySettings()


METHODS: dict[str, type[Method]] = {m.name: m for m in (L2M, Truncate, Full, Rag)}


def make_method(name: str, lm: LoadedModel, options: MethodOptions | None = None) -> Method:
    if name not in METHODS:
        raise L2MError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name](lm, options)
