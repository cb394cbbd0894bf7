"""Answers that name what was read, for questions that ask for a name.

"Which function ...?", "In which file ...?" and "Which Article ...?" ask for the name of a place. The
engine knows the places it read (the citations, with the definition or section around each from the
corpus index); a small model reading a function body often invents a plausible name instead of the one
it read. When the reply names one of the places read, that place becomes the answer's first citation;
when it names none, the answer is the name of the top citation. A place the question itself names is
never the answer ("Which util function does PathSpec.from_lines use ...?", "Article 13(12) tells ... in
line with which Article?"). Replies are cut where they start repeating themselves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, TypeVar

C = TypeVar("C", bound="Cited")
_SYMBOL = r"function|method|class|helper|decorator|callable|routine|property|exception|constructor|subclass"
# "which/what" then a noun phrase, not a verb: "what does Article 4 define?" asks for no name
_WHICH = (r"\b(which|what)\s+(?!(does|do|did|is|are|was|were|can|could|should|shall|must|will|would|may|might|has|"
          r"have|had)\b)")
_ASKS = {
    "file": re.compile(rf"{_WHICH}(\w+\s+){{0,2}}(file|module)s?\b|\bin which (file|module)\b", re.IGNORECASE),
    "section": re.compile(rf"{_WHICH}(\w+\s+){{0,1}}(article|annex|recital|section|chapter)s?\b", re.IGNORECASE),
    "symbol": re.compile(rf"{_WHICH}(\w+\s+){{0,2}}({_SYMBOL})\b|\bname of the ({_SYMBOL})\b", re.IGNORECASE),
}


def asks_for(question: str) -> str | None:
    """"file", "section" or "symbol" when the question asks for such a name (file first: "which module
    defines the class ..." asks for the module), else None."""
    for kind, pattern in _ASKS.items():
        if pattern.search(question):
            return kind
    return None


class Cited(Protocol):
    source: str
    label: str


def named_answer(question: str, reply: str, citations: Sequence[C]) -> tuple[str, list[C]]:
    """The reply and the citations, for a question that asks for a name: when the reply names a place it
    read (a cited definition, section or file) other than those the question names, that citation goes
    first, as the answer's source; when it names none of them, the answer is the name of the first citation
    the question does not name. Other questions are left as they are."""
    kind = asks_for(question)
    if kind is None or not citations:
        return reply, list(citations)

    def names(c: Cited) -> list[str]:
        if kind == "file":
            return [c.source, c.source.rsplit("/", 1)[-1]]
        return [c.label, c.label.rsplit(".", 1)[-1]] if c.label else []

    def named_in(text: str, c: Cited) -> bool:
        return any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text) for n in names(c))

    def given(c: Cited) -> bool:
        """The question names it: its whole name, or its own name where that is no plain word ("from_lines"
        in "PathSpec.from_lines", not "name" in "under a name")."""
        whole, own = names(c)[:1], [n for n in names(c)[1:] if not (n.isalpha() and n.islower())]
        return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", question) for n in whole + own)

    candidates = [c for c in citations if not given(c)]
    named = [c for c in candidates if named_in(reply, c)]
    if named:
        return reply, [named[0], *(c for c in citations if c is not named[0])]
    if not candidates:
        return reply, list(citations)
    # the answer names the first place read that the question does not; the citations keep their order,
    # the first one being where the answer was read ("Article 13(12) ... in line with Article 28")
    top = candidates[0]
    if kind == "file":
        return top.source + (f" ({top.label})" if top.label else ""), list(citations)
    return (f"{top.label} ({top.source})" if top.label else reply), list(citations)


_STUTTER = re.compile(r"(?<!\w)(\S.{2,80}?\W)(?:\1){2,}", re.DOTALL)  # whole words, three times in a row


def without_repeats(text: str) -> str:
    """Cut a reply where a line or sentence comes round again, or where a phrase repeats itself three times in
    a row within one ("high-performance, high-performance, high-performance"): greedy decoding of a small
    model loops."""
    stutter = next((m for m in _STUTTER.finditer(text) if sum(ch.isalpha() for ch in m[1]) >= 3), None)
    if stutter:  # a phrase of words, not digits ("EUR 1 000 000 000" is an amount)
        text = text[:stutter.start() + len(stutter[1])].rstrip(" ,;")
    seen: set[str] = set()
    for piece in re.finditer(r"[^.!?\n]+[.!?]?", text):
        key = piece[0].strip().lower()
        if sum(ch.isalpha() for ch in key) >= 8 and key in seen:  # not "1." of a list or "3.1"
            return text[:piece.start()].rstrip()
        seen.add(key)
    return text
