"""PDF, HTML and DOCX files as text the chunkers understand, with a map from each text line to its place.

A converter turns a document into `Piece`s: one paragraph or heading each, in reading order, with the
page it starts on (PDF) and its heading level (HTML and DOCX headings). `render` lays them out one per
line, blank lines between, so `legal.py` finds Articles, numbered paragraphs and points as in a text
file. A legal document keeps its headings as they read ("Article 4 Definitions"); any other document
with headings becomes Markdown ("## Scope"), so its sections are chunked by heading. Memory stores the
rendered text, and citations' line numbers refer to it; `Place` runs map those lines back to pages
and heading paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from repos_index.legal import looks_legal

HEADING_SEPARATOR = " > "


class BadDocument(Exception):
    """A document that yields no text (encrypted, image-only, damaged, empty); the message says which."""


@dataclass(frozen=True, slots=True)
class Piece:
    text: str  # one line: a paragraph, a list item, a table row or a heading
    page: int | None = None  # 1-based page the piece starts on (PDF)
    level: int | None = None  # heading level (1 = top) for a heading, None for body text


@dataclass(frozen=True, slots=True)
class Place:
    """Lines `line_start`..`line_end` (1-based, inclusive) of the converted text lie on `page` under `heading`."""

    line_start: int
    line_end: int
    page: int | None
    heading: str | None  # the enclosing headings, outermost first, joined by HEADING_SEPARATOR


@dataclass(frozen=True, slots=True)
class Converted:
    text: str
    language: str  # "legal", "markdown" or "text": the analyser for the text
    places: list[Place]


def _convert_pdf(data: bytes) -> list[Piece]:
    from repos_index.pdf_text import pdf_pieces

    return pdf_pieces(data)


def _convert_html(data: bytes) -> list[Piece]:
    from repos_index.html_text import html_pieces

    return html_pieces(data)


def _convert_docx(data: bytes) -> list[Piece]:
    from repos_index.docx_text import docx_pieces

    return docx_pieces(data)


_CONVERTERS = {".pdf": _convert_pdf, ".html": _convert_html, ".htm": _convert_html, ".xhtml": _convert_html,
               ".docx": _convert_docx}
DOCUMENT_SUFFIXES = frozenset(_CONVERTERS)
_SPACE = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u3000]+")


_TEMPLATE = re.compile(rb"\{%|\{\{|<%|<\?php")  # Jinja, Django, Handlebars, Angular, Vue, ERB, JSP, PHP


def is_document(path: str, data: bytes | None = None) -> bool:
    """Whether `path` is read through a converter rather than as text. An HTML template (its content, `data`,
    has template tags) is source code: it is indexed as written, so its line numbers are the file's."""
    suffix = PurePosixPath(path.lower()).suffix
    if suffix not in DOCUMENT_SUFFIXES:
        return False
    return data is None or _CONVERTERS[suffix] is not _convert_html or not _TEMPLATE.search(data)


def convert(path: str, data: bytes) -> Converted:
    """The text of the document `path` (its suffix picks the converter) holding `data`; BadDocument when
    it yields none. Deterministic: the same bytes always give the same text."""
    pieces = _CONVERTERS[PurePosixPath(path.lower()).suffix](data)
    pieces = [Piece(clean, p.page, p.level) for p in pieces if (clean := normalize_space(p.text))]
    if not pieces:
        raise BadDocument("no text in it")
    return render(pieces)


def normalize_space(text: str) -> str:
    """One line with single spaces: runs of whitespace (no-break and other Unicode spaces too) collapsed."""
    return _SPACE.sub(" ", " ".join(text.split("\n"))).strip()


def render(pieces: list[Piece]) -> Converted:
    """Lay pieces out one per line with a blank line between, and record each line's page and headings."""
    legal = looks_legal("\n".join(p.text for p in pieces))
    markdown = not legal and any(p.level is not None for p in pieces)
    lines: list[str] = []
    places: list[Place] = []
    headings: list[tuple[int, str]] = []  # the open headings: (level, text)
    for piece in pieces:
        if piece.level is not None:
            while headings and headings[-1][0] >= piece.level:
                headings.pop()
            headings.append((piece.level, piece.text))
        heading = HEADING_SEPARATOR.join(text for _, text in headings) or None
        text = f"{'#' * min(piece.level, 6)} {piece.text}" if markdown and piece.level is not None else piece.text
        first = len(lines) + 1  # the blank line before a piece belongs to it
        if lines:
            lines.append("")
        lines.append(text)
        _extend(places, first, len(lines), piece.page, heading)
    return Converted("\n".join(lines) + "\n", "legal" if legal else "markdown" if markdown else "text", places)


def _extend(places: list[Place], first: int, last: int, page: int | None, heading: str | None) -> None:
    """Add lines `first`..`last` to the last run when their place is the same, else start a run."""
    if places and places[-1].page == page and places[-1].heading == heading and places[-1].line_end == first - 1:
        places[-1] = Place(places[-1].line_start, last, page, heading)
    else:
        places.append(Place(first, last, page, heading))


def letters(number: int, upper: bool = False) -> str:
    """A list number as letters: 1 -> "a", 27 -> "aa"."""
    text = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        text = chr(ord("a") + rest) + text
    return text.upper() if upper else text


def roman(number: int, upper: bool = False) -> str:
    """A list number in roman numerals: 4 -> "iv"."""
    text = ""
    for value, symbol in ((1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"), (50, "l"),
                          (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i")):
        count, number = divmod(number, value)
        text += symbol * count
    return text.upper() if upper else text
