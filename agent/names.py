"""Name addressing: symbols and legal sections a question names, mapped to the memory blocks that hold them.

"Where is `retry_policy` defined?" or "What does Article 33 require?" names its target; the corpus index
knows where that target lives, so its blocks are pinned into every layer's read set instead of being
left to content scores. Candidates are tried from the most to the least identifier-like word; plain
lowercase words are not candidates: in "Which function loads a model?" the word "model" found the
`model` CLI command, and its pinned blocks then drew the answer and the citation away from BM25's
(on this repository's questions, top citations right went from 2/10 to 5/10 without them; bench/qa_eval.py).
"""

from __future__ import annotations

import re

from l2m_core.addressing import LexicalIndex
from l2m_core.answer_form import terms_asked_about
from repos_index.index import CorpusIndex, SymbolHit

_SECTION = re.compile(r"\b(Article|Art\.|Section|Sec\.|§|Chapter|Annex|Recital|Title)\s*(\d+[a-z]?(?:\(\d+\))?)",
                      re.IGNORECASE)
_QUOTED = re.compile(r"`([^`]+)`")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_STOP = frozenset("""a an and are as at be by can class def defined define defines does do file for from function how in
into is it its method module of on or return returns set sets the this to used uses what when where which who why
with""".split())
BLOCKS_PER_NAME = 2


def candidates(question: str) -> list[str]:
    """Words that may name a symbol, most identifier-like first: quoted, then snake/camel/dotted, then
    Capitalized. Plain lowercase words are left to BM25."""
    quoted = _QUOTED.findall(question)
    words = [w for w in _WORD.findall(_QUOTED.sub(" ", question)) if w.lower() not in _STOP and len(w) > 2]

    def identifier_like(word: str) -> bool:
        return "_" in word or "." in word or bool(re.search(r"[a-z][A-Z]", word))

    named = [w for w in dict.fromkeys(words) if identifier_like(w) or w[0].isupper()]
    return list(dict.fromkeys(quoted + sorted(named, key=lambda w: not identifier_like(w))))


def name_pins(index: CorpusIndex, question: str, limit: int, lexical: LexicalIndex | None = None) -> list[int]:
    """Blocks of the sections and symbols named in `question`, and of the definition of a quoted term whose
    meaning it asks ("Who counts as an 'open-source software steward'?"), at most `limit`, best first. Of a
    named section or symbol: its first block (its heading, `def` line or docstring) and, given the memory's
    `lexical` index, the one of its other blocks that BM25 ranks best for the question, else its second:
    "What does PathSpec.match_files do with negate=True?" is answered by the lines that use `negate`, often
    far into the body."""

    def pinned(blocks: list[int]) -> list[int]:
        rest = lexical.ranked(question, blocks[1:]) if lexical is not None else blocks[1:]
        return blocks[:1] + rest[:BLOCKS_PER_NAME - 1]

    pins: list[int] = []
    for term in terms_asked_about(question):
        for hit in _defined_terms(index, term, question)[:1]:
            pins.extend(hit.blocks[:BLOCKS_PER_NAME])
    for match in _SECTION.finditer(question):
        for section in index.find_section(f"{match[1]} {match[2]}")[:1]:
            pins.extend(pinned(section.blocks))
    for word in candidates(question):
        if len(pins) >= limit:
            break
        for hit in index.find_symbol(word)[:1]:
            pins.extend(pinned(hit.blocks))
    return list(dict.fromkeys(pins))[:limit]


def _defined_terms(index: CorpusIndex, term: str, question: str) -> list[SymbolHit]:
    """The index's defined terms for a quoted `term`: the term or its singular; else the terms that hold it
    and whose every word is in the question ("What makes a cybersecurity risk 'significant'?" ->
    'significant cybersecurity risk')."""
    same = [hit for name in dict.fromkeys([term, term.removesuffix("s")]) for hit in index.find_symbol(name)
            if hit.kind == "term"]
    asked = question.lower()
    return same or [hit for hit in index.find_terms(term)
                    if all(re.search(rf"(?<!\w){re.escape(word.lower())}", asked) for word in hit.name.split())]
