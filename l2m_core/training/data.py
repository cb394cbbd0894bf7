"""Sample data shared by training and the evaluations: the data folder, bAbI files, the novels, haystacks
and text inserted into them, and the address head's needle samples.

The data folder (not shipped with the package) holds the novels in `haystack/` and bAbI in `babi/`
(/work/shared/data/README.md). Two sentence-end rules stay apart on purpose: the evaluations' haystacks cut
and insert at `SENTENCE_END` (published results were generated with it), the address head's needle samples at
`NEEDLE_CUT`, which also skips "Mr." and "Dr." (its trained heads were).
"""

from __future__ import annotations

import os
import random
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from l2m_core.errors import L2MError

DATA_ENV = "L2M_DATA"
CHECKOUT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # the team's folder beside a checkout
NOVELS = {"train": "pride.txt", "test": "sense.txt"}  # in haystack/: training samples use one, tests the other
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
SENTENCE_END = re.compile(r"[.!?][\"'’”)\]]*(?=\s)")
NEEDLE_CUT = re.compile(r"(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bDr)(?<!\bSt)[.!?][\"']? ")
_TRAILER = re.compile(r"\s*=+\s*\(See notice at gutenberg\.txt\)\s*$")


# ---- the data folder, bAbI and the novels ------------------------------------------------------------

def data_dir(path: str | Path | None = None, fallback: Path | None = None) -> Path:
    """The data folder: `path`, else `$L2M_DATA`, else `fallback` (the evaluations have none: the folder is
    not shipped with the package)."""
    given = path or os.environ.get(DATA_ENV) or fallback
    if not given:
        raise L2MError(f"no data folder: give one with --data DIR or ${DATA_ENV} (the folder holding haystack/ "
                       "and babi/)")
    folder = Path(given).expanduser()
    if not folder.is_dir():
        raise L2MError(f"data folder not found: {folder} (give one with --data DIR or ${DATA_ENV})")
    return folder


def default_data_dir() -> Path:
    """Training's data folder: `$L2M_DATA`, else the team's shared folder beside the checkout."""
    return data_dir(fallback=CHECKOUT_DATA)


@dataclass(frozen=True)
class BabiQuestion:
    story: tuple[str, ...]        # the story's sentences before the question, in order
    question: str
    answer: str
    supporting: tuple[int, ...]   # indices into `story`


def babi_file(folder: Path, task: str, split: str) -> Path:
    """The bAbI file of `task` ("qa1".."qa5") and `split` ("train", "test") in `folder` (the data's babi/)."""
    pattern = f"{task}_*_{split}.txt"
    files = sorted(folder.glob(pattern))
    if not files:
        raise L2MError(f"no bAbI file {pattern} in {folder}")
    return files[0]


@cache
def read_babi(path: Path) -> tuple[BabiQuestion, ...]:
    """Every question of a bAbI file with the story lines before it (BABILong's split of multi-question
    stories; format: /work/shared/data/README.md)."""
    questions: list[BabiQuestion] = []
    story: list[str] = []
    index: dict[int, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        match = re.match(r"(\d+) (.*)", line)
        if not match:
            raise L2MError(f"{path}:{lineno}: not a bAbI line: {line[:60]!r}")
        number, text = int(match.group(1)), match.group(2)
        if number == 1:
            story, index = [], {}
        if "\t" in text:
            parts = text.split("\t")
            if len(parts) < 3:
                raise L2MError(f"{path}:{lineno}: a question line needs question, answer and support ids")
            support = tuple(index[int(i)] for i in parts[2].split())
            questions.append(BabiQuestion(tuple(story), parts[0].strip(), parts[1].strip(), support))
        else:
            index[number] = len(story)
            story.append(text.strip())
    return tuple(questions)


def read_novel(data: Path, split: str) -> str:
    """The novel of `split` ("train": Pride and Prejudice, "test": Sense and Sensibility), as stored."""
    path = data / "haystack" / NOVELS[split]
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise L2MError(f"haystack novel not found: {path} (set {DATA_ENV} to the data folder)") from None


# ---- haystacks and insertions ----------------------------------------------------------------------

@dataclass(frozen=True)
class Insertion:
    """Text put into the haystack at a character offset; `key` marks what the answer needs."""

    text: str
    offset: int
    key: bool = True


def insert(text: str, insertions: Sequence[Insertion]) -> tuple[str, list[int]]:
    """`text` with every insertion at its offset (ties keep their order), and where each one starts in it.

    A space separates an insertion from the text before and after it unless whitespace already does.
    """
    pieces: list[str] = []
    starts = [0] * len(insertions)
    pos = size = 0

    def emit(piece: str) -> None:
        nonlocal size
        if piece:
            pieces.append(piece)
            size += len(piece)

    for i in sorted(range(len(insertions)), key=lambda i: insertions[i].offset):
        ins = insertions[i]
        emit(text[pos:ins.offset])
        pos = ins.offset
        if pieces and not pieces[-1][-1].isspace():
            emit(" ")
        starts[i] = size
        emit(ins.text)
        if pos < len(text) and not text[pos].isspace():
            emit(" ")
    emit(text[pos:])
    return "".join(pieces), starts


class Haystack:
    """A filler corpus tokenized once; hands out prefixes of a token count that end at a sentence end."""

    def __init__(self, name: str, text: str, tokenizer: PreTrainedTokenizerBase):
        self.name, self.text = name, text
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        self.starts = [start for start, _ in encoded["offset_mapping"]]
        self.ends = [0] + [m.end() for m in SENTENCE_END.finditer(text)]

    def __len__(self) -> int:
        return len(self.starts)

    def prefix(self, tokens: int) -> str:
        """The longest prefix of at most about `tokens` tokens that ends a sentence ("" for 0)."""
        if tokens <= 0:
            return ""
        if tokens > len(self):
            raise ValueError(f"haystack {self.name} has {len(self)} tokens, {tokens} asked")
        limit = self.starts[tokens] if tokens < len(self) else len(self.text)
        return self.text[:self.ends[bisect_right(self.ends, limit) - 1]]

    def tokens_before(self, offset: int) -> int:
        return bisect_left(self.starts, offset)

    def sentence_ends(self, end: int) -> list[int]:
        """Offsets in `[0, end]` where an insertion falls between sentences."""
        return self.ends[:bisect_right(self.ends, end)]

    def at_depth(self, depth: float, end: int) -> int:
        """The sentence end in `[0, end]` nearest to `depth` (0..1) of the prefix's tokens."""
        token = round(depth * self.tokens_before(end))
        target = self.starts[token] if token < self.tokens_before(end) else end
        ends = self.sentence_ends(end)
        i = bisect_left(ends, target)
        return min(ends[max(i - 1, 0):i + 1], key=lambda e: abs(e - target))


def corpus_text(kind: str, data: Path) -> str:
    """The filler a haystack repeats: `noise` (RULER's and the passkey's) or `novel` (both novels, without
    their licence trailers)."""
    if kind == "noise":
        return NOISE + "\n"
    if kind == "novel":
        books = [_TRAILER.sub("", read_novel(data, split)).strip() for split in ("train", "test")]
        return "\n\n".join(books) + "\n\n"
    raise L2MError(f"unknown haystack {kind!r}; choose noise or novel")


def load_haystack(kind: str, tokenizer: PreTrainedTokenizerBase, tokens: int, data: Path) -> Haystack:
    """A haystack of at least `tokens` tokens, repeating the corpus as needed, cut at a line end."""
    unit = corpus_text(kind, data)
    chars = tokens * 8 + 4096  # no tokenizer here averages more than 8 characters a token
    text = unit * (chars // len(unit) + 1)
    text = text[:text.rfind("\n", 0, chars) + 1]
    haystack = Haystack(kind, text, tokenizer)
    if len(haystack) < tokens:
        raise L2MError(f"the {kind} haystack gives only {len(haystack)} tokens, {tokens} needed")
    return haystack


# ---- the address head's needle samples -------------------------------------------------------------

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


@dataclass
class NeedleSample:
    """A short document (a novel passage with a needle inserted) and a question whose answer is the needle."""

    family: str                       # "passkey" or "babi"
    document: str                     # passage with the needle(s) inserted
    question: str
    support: list[tuple[int, int]]    # character spans of the supporting fact(s) in `document`
    kind: str = ""                    # passkey: "number" or "word" value; babi: "qa1"
    answer: str = ""                  # the needle's value (passkey) or the bAbI answer


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


def scatter(passage: str, facts: list[str], rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """Put `facts` in order between sentences of `passage` at random places; return the text and each
    fact's character span."""
    cuts = [m.end() for m in NEEDLE_CUT.finditer(passage)] or [len(passage)]
    places = sorted(rng.choice(cuts) for _ in facts)
    text, starts = insert(passage, [Insertion(fact, place) for fact, place in zip(facts, places, strict=True)])
    return text, [(start, start + len(fact)) for start, fact in zip(starts, facts, strict=True)]


def passkey_samples(split: str, count: int, novel: str, tokenizer, doc_tokens: int,
                    rng: random.Random) -> list[NeedleSample]:
    templates, words = PASSKEY_TEMPLATES[split], VALUE_WORDS[split]
    texts = passages(novel, tokenizer, doc_tokens, count, len(novel) // 2, rng)
    out = []
    for i, passage in enumerate(texts):
        needle, question, kind = templates[i % len(templates)]
        value = str(rng.randrange(1000, 10000)) if kind == "number" else rng.choice(words)
        document, spans = scatter(passage, [needle.format(v=value)], rng)
        out.append(NeedleSample("passkey", document, question, spans, kind, value))
    return out


def babi_samples(split: str, count: int, novel: str, tokenizer, doc_tokens: int, rng: random.Random,
                 data: Path, max_facts: int = 4) -> list[NeedleSample]:
    """qa1 questions whose supporting fact is among the story's last `max_facts` lines."""
    stories = read_babi(babi_file(data / "babi", "qa1", split))
    questions = [q for q in stories if all(i >= len(q.story) - max_facts for i in q.supporting)]
    picked = rng.sample(questions, min(count, len(questions)))
    texts = passages(novel, tokenizer, doc_tokens, len(picked), len(novel) // 2, rng)
    out = []
    for q, passage in zip(picked, texts, strict=True):
        first = max(0, len(q.story) - max_facts)
        document, spans = scatter(passage, list(q.story[first:]), rng)
        out.append(NeedleSample("babi", document, q.question, [spans[i - first] for i in q.supporting], "qa1",
                                q.answer))
    return out


def make_samples(split: str, per_family: int, tokenizer, doc_tokens: int = 192, seed: int = 0,
                 data: Path | None = None) -> list[NeedleSample]:
    """`per_family` samples of each family for `split` ("train" or "test")."""
    data = data or default_data_dir()
    novel = read_novel(data, split)
    rng = random.Random(f"{seed}-{split}")
    return (passkey_samples(split, per_family, novel, tokenizer, doc_tokens, rng)
            + babi_samples(split, per_family, novel, tokenizer, doc_tokens, rng, data))
