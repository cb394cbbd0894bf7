"""Legal text -> structural chunks, defined terms and cross-references.

Handles regulations, statutes and contracts laid out one heading per line: Part / Title / Chapter /
Section / Article / § / Annex headings (title inline or on the next line), a preamble with numbered
recitals, numbered paragraphs ("1.   Text") and points ("(a)", "(i)", "(1)") nested by their style,
and, in documents without Articles, numbered clauses ("12.3 Governing law"). Labels follow citation
practice: "Article 33", "Article 33(1)", "Article 2(1)(a)", "Article 3, point (1)", "Recital 12".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from repos_index.records import Chunk, CrossRef, FileAnalysis, LineTable, Symbol, ordered

_RANKS = {
    "part": 1, "title": 2, "chapter": 3, "subchapter": 4, "section": 5, "subsection": 6, "article": 6,
    "annex": 1, "appendix": 1, "schedule": 1, "exhibit": 1,
}
_UNNUMBERED = frozenset({"annex", "appendix", "schedule", "exhibit"})
_HEADING = re.compile(
    r"^(?P<word>PART|Part|TITLE|Title|CHAPTER|Chapter|SUBCHAPTER|Subchapter|SECTION|Section|Sec\.|SEC\.|"
    r"SUBSECTION|Subsection|ARTICLE|Article|Art\.|ANNEX|Annex|APPENDIX|Appendix|SCHEDULE|Schedule|EXHIBIT|Exhibit)"
    r"(?:\s+(?P<num>\d+[a-z]?(?:\.\d+)*|[IVXLCDM]+[a-z]?|[A-Z]))?\.?(?:\s*(?P<sep>[-–—:.])\s*|\s+)?(?P<title>.*)$"
)
_SECTION_SIGN = re.compile(r"^§{1,2}\s*(?P<num>\d+[a-z]?(?:\.\d+)*)\.?\s*(?P<title>.*)$")
_CLAUSE = re.compile(r"^(?P<num>\d+(?:\.\d+)*)\.?\s+(?P<title>\S.*)$")
_PARAGRAPH = re.compile(r"^(?P<num>\d+[a-z]?)\.\s+\S")
_POINT = re.compile(r"^\((?P<tok>[a-z]{1,3}|[ivxlc]+|[A-Z]|\d+[a-z]?)\)(?:\s+\S.*)?$")
_ROMAN = re.compile(r"^[ivxlc]+$")
_MAX_HEADING = 200
_MARKUP = re.compile(r"^#{1,6}\s+|^[-*+]\s+|\*\*|__")  # Markdown: "## Article 13: Title", "**1.** The ...", "- (a) ..."
_MAX_TITLE_WORDS = 12

# Defined terms: "'personal data' means ..." at the start of a line or point, and "(the "Supplier")".
_QUOTED = r"[‘“\"'][^’”\"'\n]{1,150}[’”\"']"
_TERM_DEFINITION = re.compile(
    rf"^(?:\([^)]{{1,6}}\)\s*|\d+(?:\.\d+)*\.?\s+)?(?P<terms>{_QUOTED}(?:\s*(?:,|or|and|, or|, and)\s*{_QUOTED})*)\s*"
    r"(?:means|shall mean|has the meaning|refers to|is defined as)\b"
)
_TERM = re.compile(r"[‘“\"']([^’”\"'\n]{1,150})[’”\"']")
_TERM_IN_PARENTHESES = re.compile(
    r"\((?:hereinafter\s+)?(?:referred to as\s+)?(?:the\s+)?[‘“\"]([^’”\"\n]{1,80})[’”\"]\)"
)

# Cross-references.
_NUM = r"\d+[a-z]?"
_ITEM = rf"{_NUM}(?:\(\w{{1,4}}\))*"
_CONJ = r"(?:\s*,\s*and\s+|\s*,\s*or\s+|\s*,\s*|\s+and\s+|\s+or\s+|\s+to\s+)"
_ARTICLES = re.compile(rf"\b(?:Articles?|Art\.)\s+(?P<items>{_ITEM}(?:{_CONJ}(?:Article\s+)?{_ITEM})*)")
_PARAGRAPHS_OF = re.compile(
    rf"\b[Pp]aragraphs?\s+(?P<paras>{_NUM}(?:{_CONJ}{_NUM})*)\s+of\s+Article\s+(?P<items>{_ITEM})"
)
_PARAGRAPHS_HERE = re.compile(
    rf"\b[Pp]aragraphs?\s+(?P<paras>(?>{_NUM}(?:{_CONJ}{_NUM})*))(?!\s*(?:\(|of\s+(?!this\s+Article)))"
)
_UNITS = re.compile(
    r"\b(?P<word>Chapter|Title|Part|Annex|Section|Schedule|Appendix|Exhibit)\s+(?P<num>[IVXLC]+|\d+(?:\.\d+)*)\b"
)
_SECTION_REFS = re.compile(r"§{1,2}\s*(?P<num>\d+[a-z]?(?:\.\d+)*)")
_ACT = (
    r"(?:the\s+)?(?:Treaty\s+on\s+(?:European\s+Union|the\s+Functioning\s+of\s+the\s+European\s+Union)|TFEU|TEU|"
    r"(?:Commission\s+|Council\s+)?(?:Delegated\s+|Implementing\s+)?(?:Directive|Regulations?|Decision)\s+"
    r"(?:\((?:EU|EC|EEC|Euratom)\)\s+)?(?:No\s+)?\d+/\d+(?:/[A-Z]+)?|"
    r"that\s+(?:Directive|Regulation|Decision|Treaty)|those\s+(?:Directives|Regulations)|"
    r"(?:this|the\s+present)\s+(?:Regulation|Directive|Decision|Agreement|Act|Code|Contract|Article)|"
    r"the\s+(?:[A-Z][\w-]*\s+){1,6}(?:Act|Code|Law|Treaty|Convention))"
)
_EXTERNAL = re.compile(
    r"^(?:\s*,?\s*(?:points?\s+(?:\(\w+\)|\d+)(?:\s*(?:,|and|or|to)\s*(?:\(\w+\)|\d+))*|"
    r"(?:first|second|third|fourth|fifth|sixth|last)\s+subparagraph))*\s*,?\s+(?:of|in|under)\s+"
    rf"(?P<act>{_ACT})|^\s+(?P<direct>TFEU|TEU|thereof)\b"
)


@dataclass
class _Open:
    kind: str
    label: str
    rank: int
    line_start: int
    title: str | None = None
    parent: int | None = None
    style: str | None = None  # a point's numbering style: alpha, roman or numeric
    token: str | None = None
    index: int = -1
    line_end: int = 0


def looks_legal(text: str) -> bool:
    """True for three or more provision headings (Article, Section, §), or three numbered clause headings
    ("1. Definitions") in a text that defines terms, or a text that opens with a numbered Article or § heading:
    one provision excerpted from an act ("### Article 24", "§ 5 Kündigung"), whose citations should still name
    it. "Chapter" headings alone make a book, not a statute."""
    first = next((plain for line in text.split("\n", 200) if (plain := _plain(line))), "")
    if (heading := _heading(first)) is not None and heading[0] == "article" or _SECTION_SIGN.match(first):
        return True
    provisions = clauses = 0
    defines = False
    for line in text.split("\n", 20000):
        stripped = _plain(line)
        heading = _heading(stripped)
        if (heading is not None and heading[0] in ("article", "section")) or _SECTION_SIGN.match(stripped):
            provisions += 1
        elif (m := _CLAUSE.match(stripped)) and _is_clause_title(m["title"]):
            clauses += 1
        defines = defines or bool(_TERM_DEFINITION.match(stripped) or _TERM_IN_PARENTHESES.search(stripped))
        if provisions >= 3 or (clauses >= 3 and defines):
            return True
    return False


def _plain(line: str) -> str:
    """A line without surrounding space and Markdown heading or bold markers."""
    return _MARKUP.sub("", line.strip()).strip()


def is_heading(line: str) -> bool:
    """Whether a line is a structural heading ("Article 4", "CHAPTER II", "ANNEX")."""
    return _heading(_plain(line)) is not None


def _is_clause_title(title: str) -> bool:
    """ "Governing Law." is a clause heading; "The Customer shall pay the Fees within 30 days." is a sentence."""
    title = title.strip()
    words = len(title.split())
    return (words <= _MAX_TITLE_WORDS and not title.endswith((";", ",", ":")) and ". " not in title.rstrip(".")
            and not (title.endswith(".") and words > 5) and not title.startswith(("'", '"', "‘", "“")))


def analyze_legal(text: str) -> FileAnalysis:
    """Chunk a legal text by its structure and extract defined terms and cross-references."""
    return _LegalParser(text).run()


def _heading(line: str) -> tuple[str, str, str] | None:
    """(kind, label, inline title) when `line` is a structural heading."""
    m = _HEADING.match(line)
    if not m or len(line) > _MAX_HEADING:
        return None
    word = m["word"].lower().rstrip(".")
    kind = {"art": "article", "sec": "section"}.get(word, word)
    num, title = m["num"], m["title"].strip()
    if num is not None and line.startswith("(", m.end("num")):
        return None  # "Article 10(1) of Regulation ..." wrapped to the start of a line cites a paragraph
    if title and not (title[0].isupper() or title[0] in "‘“\"'(" or title[0].isdigit()):
        return None  # "Article 26 is amended as follows:" is a sentence, not a heading
    if title.endswith((":", ";", ",")):
        return None
    if num is None:
        if kind not in _UNNUMBERED or (title and not title.isupper()):
            return None
        return kind, kind.capitalize(), title
    # a long title is a sentence ("Article 5 of Regulation ... shall apply ..."), unless a colon or dash sets
    # it off as a title ("## Article 52: Market surveillance and control of products ... in the Union market")
    if len(title.split()) > _MAX_TITLE_WORDS * (2 if m["sep"] in ("-", "–", "—", ":") else 1):
        return None
    return kind, f"{kind.capitalize()} {num}", title


def _is_roman_point(token: str, stack: list[_Open]) -> bool:
    """A point such as "(i)" is roman unless it continues a letter sequence ("(h)" then "(i)")."""
    if not _ROMAN.match(token):
        return False
    for item in reversed(stack):
        if item.kind != "point":
            break
        if item.style == "alpha" and item.token and len(item.token) == len(token) and ord(token[-1]) - ord(
            item.token[-1]
        ) == 1:
            return False
    return True


class _LegalParser:
    def __init__(self, text: str) -> None:
        self.lines = [line.rstrip("\r") for line in text.split("\n")]
        self.table = LineTable(text)
        self.has_articles = any(
            (h := _heading(_plain(line))) is not None and h[0] == "article" for line in self.lines
        )
        self.has_sections = any(_SECTION_SIGN.match(line.strip()) for line in self.lines)
        self.clauses = not self.has_articles and not self.has_sections
        self.opened: list[_Open] = []
        self.stack: list[_Open] = []
        self.last_text_line = 0
        self.in_preamble = True
        self.terms: list[tuple[str, int]] = []
        self.xrefs: list[tuple[str, str, str | None, str | None, int]] = []

    # -- structure ---------------------------------------------------------------------------------

    def run(self) -> FileAnalysis:
        skip_title_line = 0
        for number, line in enumerate(self.lines, start=1):
            stripped = _plain(line)
            if not stripped or number == skip_title_line:
                if stripped:
                    self.last_text_line = number
                continue
            heading = self._structural(stripped)
            if heading is not None and heading[0] != "paragraph" and self._ends_a_sentence(number, stripped):
                heading = None
            if heading is not None:
                kind, label, title, rank = heading
                if not title and kind != "paragraph":
                    title, skip_title_line = self._title_after(number)
                self._open(kind, label, rank, number, title)
                if kind == "paragraph":
                    self._scan_text(stripped, number)
            elif not self._numbered(stripped, number):
                if self.in_preamble and not self.stack:
                    self._push(_Open("preamble", "Preamble", 0, number, stripped[:_MAX_HEADING]))
                self._scan_text(stripped, number)
            self.last_text_line = number
        self._close_to(-1)
        return self._analysis()

    def _structural(self, line: str) -> tuple[str, str, str, int] | None:
        heading = _heading(line)
        if heading is not None:
            kind, label, title = heading
            rank = _RANKS[kind]
            if kind == "section":
                number = label.split(" ", 1)[1]
                rank = 7 if self.has_articles and "." in number else 5 if self.has_articles else 6
            return kind, label, title, rank
        m = _SECTION_SIGN.match(line)
        if m and (not m["title"] or m["title"][0].isupper()) and len(m["title"].split()) <= _MAX_TITLE_WORDS:
            return "section", f"§ {m['num']}", m["title"].strip(), 6
        if self.clauses and (not self.in_preamble or self._preamble_ended_by_clause(line)):
            m = _CLAUSE.match(line)
            if m:
                depth = m["num"].count(".") + 1
                title = m["title"].strip()
                is_title = _is_clause_title(title)
                kind = "section" if is_title else "paragraph"
                return kind, f"Section {m['num']}", title if is_title else "", 5 + depth
        return None

    def _ends_a_sentence(self, number: int, line: str) -> bool:
        """Whether a heading-like line is the end of a sentence wrapped from the line above ("... set out in
        Part II of" / "Annex I."): it ends with a full stop, and the line right above breaks off mid-sentence
        (a lower-case word or a comma), which no real heading follows."""
        above = _plain(self.lines[number - 2]) if number > 1 else ""
        return line.endswith(".") and bool(above) and (above[-1].islower() or above[-1] == ",")

    def _preamble_ended_by_clause(self, line: str) -> bool:
        m = _CLAUSE.match(line)
        return bool(m) and m["num"] == "1" and _is_clause_title(m["title"])

    def _title_after(self, number: int) -> tuple[str | None, int]:
        """A heading's title on the next non-blank line ("Article 5" / "Governance and organisation")."""
        for following in range(number, min(number + 4, len(self.lines))):
            candidate = _plain(self.lines[following])
            if not candidate:
                continue
            if (len(candidate) > _MAX_HEADING or len(candidate.split()) > 2 * _MAX_TITLE_WORDS
                    or self._structural(candidate) is not None or _PARAGRAPH.match(candidate)
                    or _POINT.match(candidate) or candidate.endswith((";", ":", ","))
                    or not (candidate[0].isupper() or candidate[0].isdigit())):
                return None, 0
            return candidate, following + 1
        return None, 0

    def _numbered(self, line: str, number: int) -> bool:
        """Open a recital, paragraph or point for a numbered line; False when the line is plain text."""
        provision = self._provision()
        if self.in_preamble:
            m = _POINT.match(line)
            if m and m["tok"].isdigit():
                self._close_to(1)
                if not self.stack:
                    self._push(_Open("preamble", "Preamble", 0, number))
                self._push(_Open("recital", f"Recital {m['tok']}", 1, number))
                self._scan_text(line, number)
                return True
            return False
        if provision is None or self.clauses:
            return False
        m = _PARAGRAPH.match(line)
        if m:
            self._close_to(provision.rank + 1)
            self._push(_Open("paragraph", f"{provision.label}({m['num']})", provision.rank + 1, number))
            self._scan_text(line, number)
            return True
        m = _POINT.match(line)
        if m:
            token = m["tok"]
            style = "numeric" if token[0].isdigit() else "roman" if _is_roman_point(token, self.stack) else "alpha"
            sibling = next((i for i in reversed(self.stack) if i.kind == "point" and i.style == style), None)
            if sibling is not None:
                self._close_to(sibling.rank)
            parent = self.stack[-1]
            cited_as_point = parent.kind not in ("paragraph", "point") and not parent.label.startswith("§")
            separator = ", point " if cited_as_point else ""
            self._push(_Open("point", f"{parent.label}{separator}({token})", parent.rank + 1, number,
                             style=style, token=token))
            self._scan_text(line, number)
            return True
        return False

    def _provision(self) -> _Open | None:
        return next((item for item in reversed(self.stack) if item.kind in ("article", "section") and item.rank >= 6),
                    None)

    def _open(self, kind: str, label: str, rank: int, number: int, title: str | None) -> None:
        if self.in_preamble:
            self._close_to(-1)
            self.in_preamble = False
        self._close_to(rank)
        self._push(_Open(kind, label, rank, number, title or None))

    def _push(self, item: _Open) -> None:
        item.parent = self.stack[-1].index if self.stack else None
        item.index = len(self.opened)
        self.opened.append(item)
        self.stack.append(item)

    def _close_to(self, rank: int) -> None:
        """Close every open unit of rank >= `rank` at the last line of text seen."""
        while self.stack and self.stack[-1].rank >= rank:
            item = self.stack.pop()
            item.line_end = max(item.line_start, self.last_text_line)

    # -- terms and cross-references ------------------------------------------------------------------

    def _scan_text(self, line: str, number: int) -> None:
        m = _TERM_DEFINITION.match(line)
        if m:
            self.terms.extend((term.strip(), number) for term in _TERM.findall(m["terms"]))
        self.terms.extend((term.strip(), number) for term in _TERM_IN_PARENTHESES.findall(line))
        self._scan_xrefs(line, number)

    def _scan_xrefs(self, line: str, number: int) -> None:
        taken: list[tuple[int, int]] = []
        for m in _PARAGRAPHS_OF.finditer(line):
            taken.append(m.span())
            external = _external(line, m.end())
            for para in _split_items(m["paras"]):
                self.xrefs.append((m[0], f"Article {_unit(m['items'])}", para, external, number))
        for m in _ARTICLES.finditer(line):
            if any(start <= m.start() < end for start, end in taken):
                continue
            external = _external(line, m.end())
            for item in _split_items(m["items"]):
                article, detail = _unit(item), _detail(item)
                self.xrefs.append((m[0], f"Article {article}", detail, external, number))
        provision = self._provision()
        if provision is not None:
            for m in _PARAGRAPHS_HERE.finditer(line):
                if any(start <= m.start() < end for start, end in taken):
                    continue
                for para in _split_items(m["paras"]):
                    self.xrefs.append((m[0], provision.label, para, None, number))
        for m in _UNITS.finditer(line):
            self.xrefs.append((m[0], f"{m['word']} {m['num']}", None, _external(line, m.end()), number))
        for m in _SECTION_REFS.finditer(line):
            self.xrefs.append((m[0], f"§ {m['num']}", None, _external(line, m.end()), number))

    # -- output ----------------------------------------------------------------------------------------

    def _analysis(self) -> FileAnalysis:
        raw: list[Chunk] = []
        for item in self.opened:
            path = self._qualname(item)
            raw.append(Chunk(
                item.index, item.kind, item.label, path, item.title, item.line_start, item.line_end,
                self.table.byte_start(item.line_start), self.table.byte_end(item.line_end), item.parent,
            ))
        chunks, _ = ordered(raw)
        owner = LineTable.innermost(chunks, self.table.line_count)
        by_ordinal = {c.ordinal: c for c in chunks}
        symbols = []
        seen_terms: set[tuple[str, int]] = set()
        for term, line in self.terms:
            if (term, line) in seen_terms:
                continue
            seen_terms.add((term, line))
            chunk = owner[line]
            end = by_ordinal[chunk].line_end if chunk is not None else line
            qualname = f"{by_ordinal[chunk].name}: {term}" if chunk is not None else term
            symbols.append(Symbol(term, qualname, "term", line, end, chunk))
        xrefs = [CrossRef(text, target, detail, external, line, owner[line])
                 for text, target, detail, external, line in self.xrefs]
        return FileAnalysis(language="legal", chunks=chunks, symbols=symbols, xrefs=xrefs)

    def _qualname(self, item: _Open) -> str:
        labels = []
        current: _Open | None = item
        while current is not None:
            if current.kind not in ("paragraph", "point") or current is item:
                labels.append(current.label)
            current = self.opened[current.parent] if current.parent is not None else None
        return " / ".join(reversed(labels))


def _external(line: str, end: int) -> str | None:
    """The other act a reference ending at `end` points into, or None when it is internal."""
    m = _EXTERNAL.match(line[end:end + 160])
    if not m:
        return None
    act = m["act"] or m["direct"]
    if act.startswith(("this ", "the present ")):
        return None
    return re.sub(r"\s+", " ", act)


def _split_items(items: str) -> list[str]:
    """ "10 to 14" -> 10..14; "6(5) and Article 16(2)" -> 6(5), 16(2)."""
    parts = re.split(rf"({_CONJ})", items)
    found: list[str] = []
    i = 0
    while i < len(parts):
        item = parts[i].strip().removeprefix("Article").strip()
        if i >= 2 and parts[i - 1].strip() == "to" and found and found[-1].isdigit() and item.isdigit():
            low, high = int(found[-1]), int(item)
            found.extend(str(n) for n in range(low + 1, min(high, low + 100) + 1))
        elif item:
            found.append(item)
        i += 2
    return found


def _unit(item: str) -> str:
    return item.split("(", 1)[0]


def _detail(item: str) -> str | None:
    m = re.match(r"\d+[a-z]?\((\d+[a-z]?)\)", item)
    return m[1] if m else None
