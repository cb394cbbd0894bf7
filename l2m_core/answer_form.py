"""Answers that name what was read, for questions that ask for a name.

"Which function ...?", "In which file ...?" and "Which Article ...?" ask for the name of a place. The
engine knows the place it read most (the top citation, with the definition or section around it from
the corpus index); a small model reading a function body often invents a plausible name instead of
the one it read. For these questions the answer names the top citation's definition, file or section,
unless the model's own reply already does. Other questions keep the model's reply, cut where it starts
repeating itself.
"""

from __future__ import annotations

import re

_SYMBOL = r"function|method|class|helper|decorator|callable|routine|property|exception|constructor|subclass"
_ASKS = {
    "file": re.compile(r"\b(which|what)\s+(\w+\s+){0,2}(file|module)s?\b|\bin which (file|module)\b", re.IGNORECASE),
    "section": re.compile(r"\b(which|what)\s+(\w+\s+){0,1}(article|annex|recital|section|chapter)s?\b",
                          re.IGNORECASE),
    "symbol": re.compile(rf"\b(which|what)\s+(\w+\s+){{0,2}}({_SYMBOL})\b|\bname of the ({_SYMBOL})\b", re.IGNORECASE),
}


def asks_for(question: str) -> str | None:
    """"file", "section" or "symbol" when the question asks for such a name (file first: "which module
    defines the class ..." asks for the module), else None."""
    for kind, pattern in _ASKS.items():
        if pattern.search(question):
            return kind
    return None


def named_answer(question: str, reply: str, source: str, label: str) -> str:
    """The reply, or the name of what was read (`source`, its enclosing `label`) when the question asks
    for a name and the reply does not give that one."""
    kind = asks_for(question)
    if kind == "file":
        return reply if source in reply else f"{source}" + (f" ({label})" if label else "")
    if kind in ("symbol", "section") and label:
        return reply if label.lower() in reply.lower() else f"{label} ({source})"
    return reply


def without_repeats(text: str) -> str:
    """Cut a reply where a line or sentence comes round again (greedy decoding of a small model loops)."""
    seen: set[str] = set()
    for piece in re.finditer(r"[^.!?\n]+[.!?]?", text):
        key = piece[0].strip().lower()
        if len(key) > 1 and key in seen:
            return text[:piece.start()].rstrip()
        seen.add(key)
    return text
