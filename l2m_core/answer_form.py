"""Answers that name what was read, for questions that ask for a name or for what a term means.

"Which function ...?", "In which file ...?" and "Which Article ...?" ask for the name of a place. The
engine knows the places it read (the citations, with the definition or section around each from the
corpus index); a small model reading a function body often invents a plausible name instead of the one
it read. When the reply names one of the places read, that place becomes the answer's first citation (a
reply that names several, one a sentence, is a list of candidates, and is cut to the one chosen); when it
names none, the answer is the name of the top citation. A place the question itself names is
never the answer ("Which util function does PathSpec.from_lines use ...?", "Article 13(12) tells ... in
line with which Article?"). Replies are cut where they start repeating themselves.

Some questions ask for a name the read text refers to rather than the place read: "... referred to in which
Article?", "Which class does wait_none extend?". The top citation is then the referring paragraph or
definition, and the answer is one of the names in its text (an Article it cites, a function it calls, a
base class): the one whose surrounding words are those around the question's "which Article". So is a
question that asks which exception is raised ("What does Environment.get_template raise if ...?"): the answer
is an exception a run read raises, never the function read.

A question that asks what a quoted term means ("What is a 'software bill of materials'?") is answered with
the definition the read text gives, whole; a small model paraphrasing a definition it read loses it. One that
asks for a duration, an amount or a date is answered with the read sentence that states it, unless the reply
already gives one the text states.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from typing import Protocol, TypeVar

from l2m_core.addressing import query_terms, terms

C = TypeVar("C", bound="Cited")
_SYMBOL = (r"function|method|class|helper|decorator|callable|routine|property|exception|constructor|subclass|"
           r"classmethod|staticmethod|context\s+manager|generator|coroutine|iterator")
# "which/what" then a noun phrase, not a verb: "what does Article 4 define?" asks for no name
_WHICH = (r"\b(which|what)\s+(?!(does|do|did|is|are|was|were|can|could|should|shall|must|will|would|may|might|has|"
          r"have|had)\b)")
_WORD = r"\w+(?:-\w+)*"  # a word before the noun asked for, hyphenated ones too: "which low-level helper"
# an exception asked for: "Which error is raised ...?", "What error do I get ...?" (not "what error message"), or
# "what" in a question of what is raised ("What does X raise if ...?", "If ..., what is raised?")
_EXCEPTION = (rf"{_WHICH}({_WORD}\s+){{0,2}}(exception|error)s?\b(?!\s+(message|code|text|string|rate|handler|"
              r"handling|page|level|log|bar)s?\b)|\bwhat(?=\s+(does|do|did|will|would|is|are|was|gets?|got)"
              r"(\s+[^\s?]+){0,4}?\s+(raised?|raises|thrown?|throws)\b)")
_ASKS = {
    # "which file" but not "what file extension/format/name ...", "what file-name pattern" or "which module-level
    # constant", which ask for something else about a file; or a question that starts "Where is ...?" ("Where is
    # the undo journal defined?": the file, with the definition read there)
    "file": re.compile(rf"(?:{_WHICH}({_WORD}\s+){{0,2}}|\bin which )(file|module)s?\b(?!-|\s+(extension|format|name|"
                       r"size|type|mode|suffix|permission|descriptor|handle|object|system|content)s?\b)"
                       r"|^\s*where\s+(is|are)\b", re.IGNORECASE),
    "section": re.compile(rf"{_WHICH}({_WORD}\s+){{0,1}}(article|annex|recital|section|chapter)s?\b", re.IGNORECASE),
    # not "What CSS class ...?": a class of markup is no definition
    "symbol": re.compile(rf"{_WHICH}((?!(css|html)\b){_WORD}\s+){{0,2}}({_SYMBOL})\b|\bname of the ({_SYMBOL})\b"
                         rf"|{_EXCEPTION}", re.IGNORECASE),
}


# "which Article" after a preposition inside the question ("set up under which Article", "in line with which
# Article") or after one that starts a sentence of it and means "by the authority of" ("Under which Article are
# they designated?"; not "In which Article ...?", which asks where something is said), or any "refer": the
# name asked for is one the read text refers to
_PREPOSITIONS = r"under|of|in|with|to|by|from|on|pursuant to"
_SENTENCE_END = r"[.?!;:]\s"
_REFERS = re.compile(rf"(\w[\s,]+({_PREPOSITIONS})|(^|{_SENTENCE_END})\s*(under|pursuant to|according to))\s+which\s+"
                     rf"(\w+\s+){{0,2}}(article|annex|recital|section|chapter|{_SYMBOL})s?\b|\brefer", re.IGNORECASE)
# a which-phrase asking for another act's Article ("Which GDPR articles ...?", "which article of the Cybersecurity
# Act ...?"): the name asked for is one the read text refers to, and one it gives as another act's
_ACT_ARTICLE = r"(?i:articles?|annex(?:es)?)"
_OTHER_ACT = re.compile(rf"\b(?i:which|what)\s+(?:[A-Z][A-Z0-9]+\s+{_ACT_ARTICLE}\b|{_ACT_ARTICLE}\s+of\s+(?:the\s+)?"
                        r"(?:[A-Z][A-Z0-9]+\b|(?:[A-Z][\w-]*\s+)+(?:Act|Regulation|Directive|Decision)\b"
                        r"|(?:Regulation|Directive|Decision)\s+\())")
# what follows a mention of another act's Article: "Article 49 of Regulation (EU) 2019/881", "Article 55 or 56 of
# that Regulation", "Article 4, point (12), of Regulation ..." (not "of this Directive")
_OF_ANOTHER_ACT = re.compile(r"(?:[\s,]+(?:or|and|to|point|\(\w{1,4}\)|\d+[a-z]?))*[\s,]+of\s+(?!this\b)"
                             r"(?:that\b|the\b|[A-Z])")
# what may come before a which-phrase that leads its sentence: nothing, or a preposition ("Under which ...")
_LEADS = re.compile(rf"\s*(({_PREPOSITIONS}|according to)\s+)?", re.IGNORECASE)
_SECTION_REF = re.compile(r"\b(?:Article|Annex|Chapter|Section|Recital)\s+(?:\d+[a-z]?|[IVXLC]+\b)(?:\(\w{1,4}\))*")
# a mention that is a heading: at the start of its line, after any markup, and ending it or followed by a
# title ("Article 98(2)." on a line of its own is a hard-wrapped reference)
_HEADING_START, _HEADING_END = re.compile(r"[#*_ \t]*"), re.compile(r"\**[ \t]*(?:$|[:–—-][ \t])", re.MULTILINE)
_CALLED = re.compile(r"(?<![\w.])(?:\w+\.)*([A-Za-z_]\w*)\(")  # f(, util.f(, Future(; not "strategy (which"
_BASES = re.compile(r"^\s*class\s+\w+\s*\(([^)]*)\)", re.MULTILINE)  # class X(Base, Mixin):
_RAISED = re.compile(r"\b(?:raise|except)[ \t]+\(?(?:\w+\.)*([A-Za-z_]\w*)")  # raise E, except (E, ...
_RAISE = re.compile(r"\braise[ \t]+(?:\w+\.)*([A-Za-z_]\w*)")  # raise E, raise errors.E(...); not a bare raise
_CATCH = re.compile(r"\bexcept[ \t]+\(?((?:\w+\.)*[A-Za-z_]\w*(?:[ \t]*,[ \t]*(?:\w+\.)*[A-Za-z_]\w*)*)")
_CAPITALISED = re.compile(r"(?<=[\w,;:)]\s)[A-Z]\w*")  # a capitalised word inside a sentence: a name ("App", "Git")
_CATCHING = re.compile(r"\b(catch|caught|handl|suppress)", re.IGNORECASE)
_ASSIGNED = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*(?::[^=\n]+)?=(?!=)")  # x = ..., x: T = ...
_NOT_NAMES = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | {"self", "cls", "super", "object"}
# "Where is Segment defined?", "Which file defines `group`?", "In which module is the class HotTier defined, and
# ...": the question asks where a definition it names lives (not "Where is the retriever over the memory
# defined?", which describes it)
_LOCATED = re.compile(rf"^\s*(?:where\s+(?:is|are)|(?:which|what)\s+(?:source\s+)?(?:file|module)\s+"
                      rf"(?:defines|declares|implements|has|holds|contains)"
                      rf"|in\s+(?:which|what)\s+(?:source\s+)?(?:file|module)\s+(?:is|are))"
                      rf"\s+(?:the\s+)?(?:(?:{_SYMBOL}|constant)\s+)?`?(?P<name>[A-Za-z_][\w.]*)`?"
                      rf"(?:\s+(?:{_SYMBOL}|constant))?(?:\s+(?:defined|declared|implemented))?\s*(?:[?,.]|$)",
                      re.IGNORECASE)
# where a mention's context ends: a sentence or paragraph of (hard-wrapped) prose, a line of code
_BOUNDARY = {"section": re.compile(r"[.;:]\s|\n\s*\n"), "symbol": re.compile(r"\n")}


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
    code: bool


def referred_names(kind: str, text: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of each name `text` refers to, in order: sections ("Article 62(2)") for `kind`
    "section", called functions and base classes for "symbol" (not builtins, not definitions' own names, not
    variables the text assigns)."""
    if kind == "section":  # not a heading ("### Article 24", "## Article 51: Classification ..."): it names itself
        return [(m[0], m.start(), m.end()) for m in _SECTION_REF.finditer(text)
                if not (_HEADING_START.fullmatch(text, text.rfind("\n", 0, m.start()) + 1, m.start())
                        and _HEADING_END.match(text, m.end()))]
    found = [(m[1], m.start(1), m.end(1)) for m in _CALLED.finditer(text)
             if not re.search(r"\b(def|class)\s+$", text[max(m.start() - 7, 0):m.start()])]
    found += [(m[1], m.start(1), m.end(1)) for m in _RAISED.finditer(text) if text[m.end():m.end() + 1] != "("]
    for bases in _BASES.finditer(text):
        found += [(m[1], bases.start(1) + m.start(1), bases.start(1) + m.end(1))
                  for m in re.finditer(r"(?:\w+\.)*(\w+)(?=\s*(,|$))", bases[1])]
    skipped = _NOT_NAMES | set(_ASSIGNED.findall(text))  # `use_factory = ...; use_factory(line)` calls a variable
    return sorted((f for f in found if f[0] not in skipped), key=lambda f: f[1])


def _best_referred(question: str, kind: str, text: str) -> tuple[str | None, float]:
    """The name `text` refers to whose mention is surrounded by the words that surround the question's
    which-phrase, on the same side ("the examination procedure of which Article" ~ "the examination
    procedure referred to in Article 62(2)"; either side when a sentence of the question starts with it, or
    with a preposition and it: "Which class does wait_none extend?" ~ "class wait_none(wait_fixed)", "Under
    which Article are those CSIRTs designated?" ~ "the CSIRTs designated pursuant to Article 10"). Each
    shared word counts 1 / (1 + its distance in the question) times 1 / (1 + its distance in the mention's
    sentence or line); names the question gives are skipped, the first mention wins a tie, and a name that
    shares no word is not chosen (None). With its score."""
    wanted = set(query_terms(question, stemmed=True))
    which = _ASKS[kind].search(question)
    exception = _asks_exception(question, kind)
    # "raise X" reads the same way round whatever the question's word order
    leads = exception or bool(_LEADS.fullmatch(re.split(_SENTENCE_END, question[:which.start()])[-1]))
    asked = _closeness(question[:which.start()], question[which.end():], wanted, leads)
    if exception:  # every word of the situation counts alike, not "raise" (every mention has it) nor the names
        # of the code it happens in ("What does MarkdownIt raise if ...?": each of its methods' errors names it)
        named = {t for name in [*_identifiers(question), *_CAPITALISED.findall(question), "raise"]
                 for t in terms(name, stemmed=True)}
        asked = {key: 1.0 for key in asked if key[1] not in named}
    other_act = kind == "section" and _OTHER_ACT.search(question) is not None
    # any exception raised beats the name of the function that raises it, words shared or not
    best, best_score = None, -1.0 if exception else 0.0
    for name, start, end in _exceptions(question, text) if exception else referred_names(kind, text):
        if _given(question, [name]) or (other_act and not _OF_ANOTHER_ACT.match(text, end)):
            continue  # a name the question gives; one of this act's Articles, where another act's is asked for
        # an exception's words are on its line and the one before ("if preset not in PRESETS:\n raise KeyError"),
        # and in the rest of its statement (its message)
        lo = max((m.end() for m in _BOUNDARY[kind].finditer(text, 0, text.rfind("\n", 0, start) if exception
                                                              else start)), default=0)
        hi = _statement_end(text, end) if exception else next(
            (m.start() for m in _BOUNDARY[kind].finditer(text, end)), len(text))
        near = _closeness(text[lo:start], text[end:hi], wanted, leads)
        score = sum(asked[w] * near[w] for w in near.keys() & asked.keys())
        if score > best_score:
            best, best_score = name, score
    return best, best_score


def _asks_exception(question: str, kind: str) -> bool:
    """Whether the question asks for an exception ("Which exception does ... raise?", "What does X raise ...?")."""
    asked = re.search(_EXCEPTION, question, re.IGNORECASE)
    return kind == "symbol" and asked is not None and asked.start() == _ASKS[kind].search(question).start()


def _exceptions(question: str, text: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of each exception `text` raises (built-in ones too), or catches where the question
    speaks of catching: "when the parser reports a syntax error, which exception does it raise?" is not
    answered by `except ParserSyntaxError`."""
    if not _CATCHING.search(question):
        return [(m[1], m.start(1), m.end(1)) for m in _RAISE.finditer(text)]
    return [(n[1], m.start(1) + n.start(1), m.start(1) + n.end(1)) for m in _CATCH.finditer(text)
            for n in re.finditer(r"(?:\w+\.)*(\w+)", m[1])]  # except (A, errors.B): A and B


def _statement_end(text: str, at: int) -> int:
    """The end of the line where the statement going on at `at` ends, its brackets closed: a raise reads with
    its message over the lines that follow ("Pass a (connect, read) timeout tuple"); the end of the text when
    they never close."""
    depth = 0
    for i in range(at, len(text)):
        if text[i] == "\n" and depth <= 0:
            return i
        depth += (text[i] in "([{") - (text[i] in ")]}")
    return len(text)


def _closeness(before: str, after: str, wanted: set[str], either_side: bool) -> dict[tuple[str, str], float]:
    """For each `wanted` word and side ("<" in `before`, ">" in `after`, "" when `either_side`), 1 / (1 +
    the distance in words) from the point between `before` and `after` to its nearest occurrence."""
    out: dict[tuple[str, str], float] = {}
    for side, words in (("<", terms(before, stemmed=True)[::-1]), (">", terms(after, stemmed=True))):
        for distance, word in enumerate(words):
            key = ("" if either_side else side, word)
            if word in wanted:
                out[key] = max(out.get(key, 0.0), 1 / (1 + distance))
    return out


def _said_at(text: str, names: list[str]) -> int | None:
    """Where `text` first names one of `names` on its own ("walk" is not named by "Spec.walk" or "walker"),
    None where it names none."""
    found = [m.start() for n in names if (m := re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text))]
    return min(found, default=None)


def _given(question: str, names: list[str]) -> bool:
    """The question names a place called `names` (whole name first, then its own name): its whole name, or
    its own name where that is no plain word ("from_lines" in "PathSpec.from_lines", not "name" in "under a
    name")."""
    own = [n for n in names[1:] if not (n.isalpha() and n.islower())]
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", question) for n in names[:1] + own)


def _cited_first(first: C, citations: Sequence[C]) -> list[C]:
    """The citations with `first`, the run the answer was read from, moved to the front."""
    return [first, *(c for c in citations if c is not first)]


def _outside_which(question: str, kind: str) -> str:
    """The question without its which-phrase ("Which class does wait_none extend?" -> " does wait_none extend?")."""
    which = _ASKS[kind].search(question)
    return question[:which.start()] + " " + question[which.end():]


def _identifiers(text: str) -> list[str]:
    """The code identifiers `text` gives: snake_case, camelCase or dotted words ("wait_none", "PathSpec",
    "Version.is_prerelease"; not "Which" or "Git"), each with its own last name."""
    words = re.findall(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", text)
    named = [w for w in words if "_" in w or "." in w or re.search(r"[a-z][A-Z]", w)]
    return list(dict.fromkeys(n for w in named for n in (w, w.rsplit(".", 1)[-1])))


def _defines(text: str, names: Iterable[str], methods: bool = True) -> bool:
    """Whether `text` holds the `class` or `def` line of one of `names` (not an indented `def`, a method's,
    unless `methods`)."""
    alternatives = "|".join(map(re.escape, names))
    indent = r"\s*" if methods else ""
    return bool(alternatives) and re.search(rf"^(?:\s*class|{indent}(?:async\s+)?def)\s+(?:{alternatives})\b",
                                            text, re.MULTILINE) is not None


def _refers(question: str, kind: str, top_names: list[str]) -> bool:
    """Whether the question, which asks for a name of `kind`, asks for one that the text of the place called
    `top_names` refers to: it says so ("referred to in which Article", "under which Article"), or it names
    that place outside its which-phrase ("Which class does wait_none extend?"; not "Which PathSpec method
    ...", where the class only holds the answer), or it asks for another act's Article ("Which GDPR articles
    ...?")."""
    return bool(_REFERS.search(question) or _OTHER_ACT.search(question)) or _given(_outside_which(question, kind),
                                                                                   top_names)


def named_answer(question: str, reply: str, citations: Sequence[C], text_of: Callable[[C], str] | None = None,
                 likelihood: Callable[[list[C]], list[float]] | None = None, among: int = 3) -> tuple[str, list[C]]:
    """The reply and the citations, for a question that asks for a name: when the reply names a place it
    read (a cited definition, section or file) other than those the question names, that citation (of
    several, the one it names first) goes first, as the answer's source; when it names none of them, the
    answer is the name of the first citation the question does not name, and that citation goes first. A
    question that asks for a name the read text refers to (see the module's docstring; `text_of(citation)` is
    the text read there) is answered with the best of the names that the runs read of the place it names
    refer to, else those the top citation's text refers to (`_best_referred`; not the reply's choice: the model
    names a local variable it read as readily as the function asked for), and the referring run goes first.
    A question that asks for a function or class by what it does, or for the Article that says something, is
    answered, given `likelihood` (how well each run explains the question), with the one of the first `among`
    definitions or sections read (and the one the reply names) that explains it best: a model that read several
    names the wrong one as readily as the right one ("Which helper cuts a string ...?" got
    `_tk_dispatching_helper`, read beside `disp_trim`, for its word "helper"; "Which article covers ... a
    personal data breach ...?" got Article 36, read beside Article 35). Other questions are left as they are."""
    kind = asks_for(question)
    if kind is None or not citations:
        return reply, list(citations)
    asks_class = kind == "symbol" and re.search(r"\bclass(?!\s*method)", _ASKS[kind].search(question)[0],
                                                re.IGNORECASE) is not None

    def names(c: Cited) -> list[str]:
        if kind == "file":
            return [c.source, c.source.rsplit("/", 1)[-1]]
        return [c.label, c.label.rsplit(".", 1)[-1]] if c.label else []

    def as_class(c: Cited) -> list[str]:
        """Asked for a class, a method read goes by its class ("TreeEntry.stat", "TreeEntry"), not by its own
        name: the methods a question names describe the class it asks for ("Which class ... in __repr__ and
        _repr_pretty_?"), and "Which class does RetryCallState.set_result create?" names the method whole."""
        return [c.label, c.label.rsplit(".", 1)[0]] if asks_class and c.label else names(c)

    if kind == "file" and (located := _located_answer(question, reply, citations, text_of)) is not None:
        return located
    top = citations[0]
    # the place the question names, when it names a definition it read (its `class`/`def` line) under
    # another label: a run's label is the definition its first line is in, and the run read may go on into
    # the next one ("Which class does wait_random_exponential extend?" read under `wait_exponential.__call__`)
    defining = []
    if text_of is not None and kind == "symbol":
        own = _identifiers(_outside_which(question, kind))
        defining = [c for c in citations if _defines(text_of(c), own, methods=not asks_class)]
    exception = _asks_exception(question, kind)
    if text_of is not None and kind != "file" and (exception or defining or _refers(question, kind, [
            n for c in citations for n in as_class(c)])):
        # the referring text: the runs read of the place the question names ("Article 13(12) tells ... in
        # line with which Article?"; the best mention among them), with any run holding its `class` or `def`
        # line under another label (a block that mostly ends the definition before), else the top citation;
        # cited first
        given = ([c for c in citations if c.label and _given(question, names(c))]
                 or [c for c in citations if c.label and asks_class and _given(question, as_class(c))])
        heads = {c.label.rsplit(".", 1)[-1] for c in given}
        given += [c for c in citations if c not in given and _defines(text_of(c), heads)]
        given += [c for c in defining if c not in given]
        # an exception is what a run raises, never the name of the function read: any of the first `among`
        for runs in [given, list(citations[:among]) if exception else [top]]:
            (name, score), c = max(((_best_referred(question, kind, text_of(c)), c) for c in runs),
                                   key=lambda found: found[0][1], default=((None, 0.0), top))
            if name is not None:
                return f"{name} ({c.source})", _cited_first(c, citations)
        if exception:  # none raised in the runs read: the reply may name it, a function read never does
            return reply, list(citations)
    candidates = [c for c in citations if not _given(question, as_class(c))]
    # the places the reply names, the one it names first first ("Article 16 of ... Article 14")
    said = {id(c): at for c in candidates if (at := _said_at(reply, as_class(c))) is not None}
    named = sorted((c for c in candidates if id(c) in said), key=lambda c: said[id(c)])
    # a function, class or Article is a labelled place: the first ones read and the one the reply names
    defined = [c for c in candidates if c.label][:among]
    pool = [*defined, *(c for c in named[:1] if c.label and c not in defined)]
    if kind in ("symbol", "section") and likelihood is not None and len(pool) > 1:
        scores = likelihood(pool)
        best = pool[max(range(len(pool)), key=scores.__getitem__)]
        # the definition or section is the model's choice; of the runs read of it (an overload, the body), the first
        first = next(c for c in candidates if c.label == best.label)
        if id(first) in said:
            return _committed(reply, first, named, as_class), _cited_first(first, citations)
    elif named:
        return _committed(reply, named[0], named, as_class), _cited_first(named[0], citations)
    elif candidates:
        first = candidates[0]  # the answer names the first place read that the question does not, cited first
    else:
        return reply, list(citations)
    if kind == "file":
        return first.source + (f" ({first.label})" if first.label else ""), _cited_first(first, citations)
    name = first.label.rsplit(".", 1)[0] if asks_class else first.label
    return (f"{name} ({first.source})" if name else reply), _cited_first(first, citations)


_SENTENCES = re.compile(r"(?:[^.!?\n]|[.!?](?![.!?]*(?:\s|$)))+[.!?]*")  # "tqdm.format_interval" is no end


def _committed(reply: str, chosen: C, named: Sequence[C], names: Callable[[C], list[str]]) -> str:
    """The reply from its first sentence that names `chosen` (of the places read that it names, `named`), up to
    a later one that names another of them but not `chosen`: a reply that names one place per sentence ("The
    function `normalizeLinkText` is the one ... The function `normalizeLink` is the one ...") lists
    candidates, and a list is not an answer. A sentence that names others beside `chosen` ("Spec.walk, which
    calls normalize_file.") describes it and is kept."""
    own = names(chosen)
    others = [n for c in named for n in names(c) if n not in own]
    start = end = None
    for m in _SENTENCES.finditer(reply):
        if _said_at(m[0], own) is not None:
            start, end = (m.start() if start is None else start), m.end()
        elif start is not None and _said_at(m[0], others) is not None:
            break
        elif start is not None:
            end = m.end()
    return reply if start is None else reply[start:end].strip()


def _located_answer(question: str, reply: str, citations: Sequence[C],
                    text_of: Callable[[C], str] | None) -> tuple[str, list[C]] | None:
    """For "Where is Segment defined?": the file of the run read that is the named definition (its label, else
    one that holds its `class` or unindented `def` line, else a method's or local function's), cited first.
    The question's name pins that definition into the read set; what BM25 ranks first is a place that merely
    mentions it. A question that goes on ("..., and what does it evict?") keeps the reply after the place.
    None when the question describes what it looks for instead, or no run read is that definition."""
    asked = _LOCATED.match(question)
    if asked is None:
        return None
    name, own = asked["name"], asked["name"].rsplit(".", 1)[-1]
    found = next((c for c in citations if c.label and name in (c.label, c.label.rsplit(".", 1)[-1])), None)
    if found is None and text_of is not None:
        texts = [(c, text_of(c)) for c in citations]  # each run's text read once for both passes
        found = next((c for methods in (False, True) for c, text in texts if _defines(text, [own], methods)), None)
    if found is None:
        return None
    place = f"{found.source} ({name})"
    goes_on = question[asked.end():].strip() and reply.strip()
    return (f"{place}. {reply.strip()}" if goes_on else place), _cited_first(found, citations)


_QUOTED = re.compile(r"(?<!\w)['‘\"“]([^'’\"”\n]{2,80}?)['’\"”](?!\w)")
# "What is a 'X'?", "What does 'X' mean?", "How is 'X' defined?", "Who counts as a 'X'?", "When is a Y
# considered 'X'?"
_ASKS_MEANING = re.compile(r"\bmean|\bdefin|\bcounts? as\b|\bregarded as\b|\bconsider|\bsense of\b"
                           r"|^\s*(what|who)\s+(is|are)\b", re.IGNORECASE)
_DEFINES = re.compile(r"(?<!\w)['‘\"“]([^'’\"”\n]{2,120})['’\"”]\s+means\b")
_DEFINITION_END = re.compile(r"[;.](?=[ \t]*(\n|$))|\n\s*\n")


def terms_asked_about(question: str) -> list[str]:
    """The quoted terms of a question that asks what they mean ("What is a 'software bill of materials'?");
    none for other questions, quoted terms or not ("How often is the 'software bill of materials' updated?")."""
    if asks_for(question) is not None or not _ASKS_MEANING.search(question):
        return []
    return _QUOTED.findall(question)


def defined_answer(question: str, reply: str, citations: Sequence[C],
                   text_of: Callable[[C], str]) -> tuple[str, list[C]]:
    """For a question that asks what a quoted term means ("What is a 'software bill of materials'?"), the
    definition the read text gives ("'software bill of materials' means a formal record ...;"), whole, with
    the run that gives it cited first; a small model paraphrasing a definition loses it. The term defined is
    the question's term, else its singular or plural, else one that holds it ('major' -> 'major ICT-related
    incident'); the closest such term wins, then the earliest cited. Other questions, and questions whose
    read text defines no such term, keep the reply."""
    quoted = [q.lower() for q in terms_asked_about(question)]
    if not quoted:
        return reply, list(citations)
    found = []  # (closeness, citation rank, definition, citation)
    for rank, c in enumerate(citations):
        text = text_of(c)
        for m in _DEFINES.finditer(text):
            distances = [d for q in quoted if (d := _term_distance(q, m[1].lower())) is not None]
            if distances:
                end = _DEFINITION_END.search(text, m.end())
                definition = " ".join(text[m.start():end.end() if end else len(text)].split())
                found.append((min(distances), rank, definition, c))
    if not found:
        return reply, list(citations)
    _, _, definition, c = min(found, key=lambda f: f[:2])
    return definition, _cited_first(c, citations)


def _term_distance(asked: str, defined: str) -> int | None:
    """0 for the same term, 1 for its singular or plural, 2 when the defined term holds the asked one as
    whole words; None otherwise."""
    if asked == defined:
        return 0
    if asked.removesuffix("s") == defined.removesuffix("s"):
        return 1
    return 2 if re.search(rf"(?<!\w){re.escape(asked)}(?!\w)", defined) else None


_NUMBER = (r"(?:\d+(?:[ ,.]\d+)*|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|eighteen|"
           r"twenty(?:-four)?|thirty|forty(?:-eight)?|fifty|sixty|seventy(?:-two)?|ninety|hundred)")
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
# what a question asks for ("How long ...?", "Up to what amount ...?", "From what date ...?") and how the
# read text states it
_QUANTITIES = {
    "duration": (re.compile(r"\bhow (long|often|frequently|soon|much time)\b|"
                            r"\bhow many (hours|days|weeks|months|years)\b|\bfor (what|which) term\b|"
                            r"\b(what|which) (\w+ ){0,4}(period|deadline|time limit|interval)s?\b|\bby when\b|"
                            r"\bwhat is the (latest|earliest)\b", re.IGNORECASE),
                 re.compile(rf"\b{_NUMBER}\s+(?:working\s+|calendar\s+)?(?:hours?|days?|weeks?|months?|years?)\b|"
                            r"\b(?:once|twice)\s+(?:a|per|every)\s+(?:day|week|month|year)\b|"
                            r"\b(?:annually|yearly|monthly|weekly|daily)\b|"
                            r"\bevery\s+(?:\w+\s+)?(?:days?|weeks?|months?|years?)\b", re.IGNORECASE)),
    "amount": (re.compile(r"\bhow much\b(?! time)|"
                          r"\b(what|which) (\w+ ){0,2}(amount|fine|sum|share|percentage|proportion|fee)s?\b|"
                          r"\bup to what\b", re.IGNORECASE),
               re.compile(rf"(?:EUR|€)\s*{_NUMBER}(?:\s*(?:million|billion))?|"
                          rf"{_NUMBER}\s*(?:%|per\s*cent\b|percent\b)|"
                          rf"\b{_NUMBER}\s*(?:million|billion)?\s*(?:EUR|euros?)\b", re.IGNORECASE)),
    "date": (re.compile(r"\b(what|which) date\b", re.IGNORECASE),
             re.compile(rf"\b\d{{1,2}}\s+{_MONTH}\s+\d{{4}}\b")),
}


_SENTENCE_END = re.compile(r"[.;:](?=\s|$)")
_LEAD_IN = re.compile(r"^\W*(?:(?:the\s+)?answer(?:\s+to\s+(?:this|the|your)\s+question)?(?:\s+is)?\s*:?)?\W*$",
                      re.IGNORECASE)  # a reply with no content: "", "The answer is:"
_LEAD_WORDS = frozenset({"answer", "question"})  # "The answer is: 3" says "3"


_UNIT_ASKED = re.compile(r"\bhow many (hour|day|week|month|year)s?\b", re.IGNORECASE)  # "how many weeks" wants weeks


def quantity_asked(question: str) -> str | None:
    """"duration", "amount" or "date" when the question asks for one ("How long ...?", "Up to what amount
    ...?", "From what date ...?"), else None."""
    return next((kind for kind, (asks, _) in _QUANTITIES.items() if asks.search(question)), None)


def states_quantity(kind: str, text: str) -> bool:
    """Whether `text` states a quantity of `kind` ("duration", "amount", "date")."""
    return bool(_QUANTITIES[kind][1].search(" ".join(text.split())))


def quantity_answer(question: str, reply: str, citations: Sequence[C],
                    text_of: Callable[[C], str]) -> tuple[str, list[C]]:
    """For a question that asks for a duration, an amount or a date, the sentence of the read text that
    states one where the question's words are (the closer the better, as in `_best_referred`), with its run
    cited first; a small model reading "no later than 14 days after ..." answers "a limited period of time" or
    invents an amount. A reply that already gives a quantity of that kind which the read text states is kept,
    with the run that states it where the question's words are cited first (not always the run addressing put
    first), and so is every reply when no read sentence states one near the question's words. A question that names
    its unit ("Within how many weeks ...?") takes only quantities in that unit: "15 calendar days" read in
    the next paragraph is not its answer."""
    kind = quantity_asked(question)
    if kind is None or not citations:
        return reply, list(citations)
    unit = _UNIT_ASKED.search(question)

    def mentions(text: str) -> Iterator[re.Match]:
        """The quantities of the kind asked that `text` states, in the unit asked where one is."""
        return (m for m in _QUANTITIES[kind][1].finditer(text) if unit is None or unit[1] in m[0].lower())

    texts = [" ".join(text_of(c).split()) for c in citations]
    stated = {_figure(m[0]) for text in texts for m in mentions(text)}
    given = stated & {_figure(m[0]) for m in mentions(reply)}  # what the reply states that was read
    wanted = set(query_terms(question, stemmed=True))
    best, best_score = None, 0.0
    for c, text in zip(citations, texts, strict=True):
        for m in mentions(text):
            if given and _figure(m[0]) not in given:
                continue
            lo = max((b.end() for b in _SENTENCE_END.finditer(text, 0, m.start())), default=0)
            hi = next((b.start() + 1 for b in _SENTENCE_END.finditer(text, m.end())), len(text))
            score = sum(_closeness(text[lo:m.start()], text[m.end():hi], wanted, either_side=True).values())
            if score > best_score:
                best, best_score = (text[lo:hi].strip(" -"), c), score
    if best is None:
        return reply, list(citations)
    sentence, c = best
    return reply if given else sentence, _cited_first(c, citations)


def passage_answer(question: str, reply: str, citations: Sequence[C], text_of: Callable[[C], str],
                   runs: int = 2, short: int = 200, grounded: float = 0.7) -> tuple[str, list[C]]:
    """For a reply that says nothing ("", "The answer is:"; greedy decoding of a small model stops there now
    and then, the evidence read), or, when the first `runs` cited runs are prose, a reply to a question that
    asks for no name, term or quantity in which under `grounded` of its own words (those of four letters or
    more, and numbers, that the question does not give) are in those runs (it answered from its priors:
    "Article 20 of the Law on the Protection of Consumer Goods") or which has none but restates three of the
    question's words ("The Joint Committee is established as a sub-committee ..."), the sentence of those
    runs that holds most of the question's words, each weighted by how few read sentences hold it, and the
    sentence after it when it is under `short` characters, with its run cited first. Other replies are kept.
    Code is never quoted for an unfounded reply: its "sentences" are fragments of statements, seldom an
    answer."""
    if not citations or not (_LEAD_IN.match(reply) or _unfounded(question, reply, citations[:runs], text_of,
                                                                 grounded)):
        return reply, list(citations)
    wanted = set(query_terms(question, stemmed=True))
    found = []  # (citation, the sentence and the next one when it is short, the question's words it holds)
    for c in citations[:runs]:
        text = " ".join(text_of(c).split())
        ends = [0, *(m.end() for m in _SENTENCE_END.finditer(text)), len(text)]
        for i, (a, b) in enumerate(pairwise(ends)):
            upto = ends[i + 2] if b - a < short and i + 2 < len(ends) else b
            found.append((c, text[a:upto].strip(" -"), wanted & set(terms(text[a:b], stemmed=True))))
    # a word in few of the read sentences says more about where the answer is ("date" over "product")
    weight = {w: math.log(1 + len(found) / sum(w in f[2] for f in found)) for f in found for w in f[2]}
    best, best_score = None, 0.0
    for c, sentence, held in found:
        if (score := sum(weight[w] for w in held)) > best_score:
            best, best_score = (sentence, c), score
    if best is None:
        return reply, list(citations)
    sentence, c = best
    return sentence, _cited_first(c, citations)


def _formed(question: str) -> bool:
    """Whether the question asks for a name, a quoted term's meaning or a quantity: one of the forms above
    answers it."""
    return bool(asks_for(question) or terms_asked_about(question) or quantity_asked(question))


def _unfounded(question: str, reply: str, read: Sequence[C], text_of: Callable[[C], str], share: float) -> bool:
    """Whether, reading prose, the reply to a question no other form answers has under `share` of its own
    words in the `read` runs (see `passage_answer`)."""
    if any(c.code for c in read) or _formed(question):
        return False
    said = {w for w in terms(reply, stemmed=True) if len(w) >= 4 or w.isdigit()} - _LEAD_WORDS - set(
        query_terms(question, stemmed=True))
    if not said:  # the question restated
        return len(set(terms(reply, stemmed=True)) & set(query_terms(question, stemmed=True))) >= 3
    held = set().union(*(terms(text_of(c), stemmed=True) for c in read))
    return len(said & held) < share * len(said)


def supported_answer(question: str, reply: str, citations: Sequence[C], text_of: Callable[[C], str],
                     runs: int = 5, margin: float = 1.5) -> tuple[str, list[C]]:
    """The reply, with the run that holds its words cited first, for a question none of the forms above
    answers (no name, term or quantity asked): of the first `runs` cited runs, the one holding most of the
    reply's words that the question does not give, each weighted by how few of those runs hold it, when it
    holds over `margin` times what the top run holds. The model answers from the whole read set; the run
    it took "HS_FLAG_UTF8" or ".whl" from is where the answer was read, not always the run BM25 and
    attention put first."""
    if _formed(question):
        return reply, list(citations)
    said = set(terms(reply, stemmed=True)) - set(query_terms(question, stemmed=True))
    held = [said & set(terms(text_of(c), stemmed=True)) for c in citations[:runs]]
    if len(held) < 2:
        return reply, list(citations)
    weight = {w: math.log(1 + len(held) / sum(w in h for h in held)) for h in held for w in h}
    score = [sum(weight[w] for w in h) for h in held]
    best = max(range(len(held)), key=score.__getitem__)
    if score[best] <= margin * score[0]:
        return reply, list(citations)
    return reply, _cited_first(citations[best], citations)


def _figure(quantity: str) -> str:
    """A quantity as a key that ignores how it is written: "2,5 %" and "2.5%", "15 000 000" and "15,000,000"."""
    key = re.sub(r"\s+", "", quantity.lower()).replace(",", ".")
    return re.sub(r"(?<=\d)\.(?=\d{3}(?!\d))", "", key)
_STUTTER = re.compile(r"(?<!\w)(\S.{2,80}?\W)(?:\1){2,}", re.DOTALL)  # whole words, three times in a row


def without_repeats(text: str) -> str:
    """Cut a reply where a line or sentence comes round again, or where a phrase repeats itself three times in
    a row within one ("high-performance, high-performance, high-performance"): greedy decoding of a small
    model loops."""
    stutter = next((m for m in _STUTTER.finditer(text) if sum(ch.isalpha() for ch in m[1]) >= 3), None)
    if stutter:  # a phrase of words, not digits ("EUR 1 000 000 000" is an amount)
        text = text[:stutter.start() + len(stutter[1])].rstrip(" ,;")
    # lines, and sentences wrapped over lines ("... of the\ntop-k of the cold tier. The hot tier ...")
    for unit in (r"[^.!?\n]+[.!?]?", r"[^.!?]+[.!?]?"):
        seen: set[str] = set()
        for piece in re.finditer(unit, text):
            key = " ".join(piece[0].split()).lower()
            if sum(ch.isalpha() for ch in key) >= 8 and key in seen:  # not "1." of a list or "3.1"
                text = text[:piece.start()].rstrip()
                break
            seen.add(key)
    return text
