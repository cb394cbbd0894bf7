"""PDF -> paragraphs with their page numbers (pypdf): running headers and footers dropped, hyphenation undone.

A PDF's text comes as the lines laid out on each page. Lines that repeat at the top or bottom of many
pages (digits aside: "L 333/12", "Page 3 of 9") and bare page numbers are running headers and footers.
Lines are joined back into paragraphs: a line continues the previous one when that one ran to about
the full text width and this one does not open a unit of its own (a short heading, "1.", "(a)", a
bullet, after a line that ends a sentence or a clause), across page breaks too; a word split by a
hyphen at a line end is rejoined, keeping the hyphen only when the document spells the word with one
elsewhere ("non-financial").
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter

from repos_index.documents import BadDocument, Piece, normalize_space
from repos_index.legal import is_heading

_EDGE_LINES = 3  # lines at the top and at the bottom of a page that may be running headers or footers
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?[-–—]?\s*\d{1,4}\s*[-–—]?(?:\s*(?:/|of)\s*\d{1,4})?$", re.IGNORECASE)
_UNIT_START = re.compile(r"^(?:\(\w{1,4}\)|\d+[a-z]?\.(?:\d+\.?)*\s|[•▪◦·*\-–—]\s)")
_SENTENCE_END = re.compile(r"(?:[.:;!?]|;\s+(?:and|or))[\"'’”)]*$")  # what ends the line before a new unit
_SPLIT_WORD = re.compile(r"(\w+)-$")
_FIRST_WORD = re.compile(r"^([a-zß-ÿ]\w*)")
_FULL_WIDTH = 0.8  # a line this share of the typical full line length (or longer) runs on
_HEADING_WIDTH = 0.6  # a heading is shorter than this share of it


def pdf_pieces(data: bytes) -> list[Piece]:
    """The paragraphs of a PDF, each with the page (1-based) it starts on."""
    pages = _page_lines(data)
    lines = [(line, number) for number, page in enumerate(_strip_running(pages), start=1) for line in page]
    if not lines:
        raise BadDocument("no text layer (a scanned or image-only PDF needs OCR first)")
    return _paragraphs(lines)


def _page_lines(data: bytes) -> list[list[str]]:
    from pypdf import PasswordType, PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise BadDocument("encrypted PDF: it needs a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except BadDocument:
        raise
    except Exception as exc:  # pypdf raises many kinds (PdfReadError, ValueError, KeyError, ...) on a broken file
        raise BadDocument(f"damaged PDF ({type(exc).__name__}: {exc})") from exc
    return [[clean for line in text.split("\n") if (clean := normalize_space(line))] for text in pages]


def _shape(line: str) -> str:
    return re.sub(r"\d+", "#", line.lower())


def _strip_running(pages: list[list[str]]) -> list[list[str]]:
    """Pages without their running headers and footers."""
    tops: Counter[str] = Counter()
    bottoms: Counter[str] = Counter()
    for page in pages:
        tops.update({_shape(line) for line in page[:_EDGE_LINES]})
        bottoms.update({_shape(line) for line in page[-_EDGE_LINES:]})
    needed = max(2, math.ceil(len(pages) / 2))
    running = {shape for counts in (tops, bottoms) for shape, n in counts.items() if n >= needed}

    def is_running(line: str) -> bool:
        return not is_heading(line) and not _UNIT_START.match(line) and (
            _shape(line) in running or bool(_PAGE_NUMBER.match(line)))

    stripped = []
    for page in pages:
        start, end = 0, len(page)
        while start < min(end, _EDGE_LINES) and is_running(page[start]):
            start += 1
        while end > max(start, len(page) - _EDGE_LINES) and is_running(page[end - 1]):
            end -= 1
        stripped.append(page[start:end])
    return stripped


def _paragraphs(lines: list[tuple[str, int]]) -> list[Piece]:
    lengths = sorted(len(line) for line, _ in lines)
    full = lengths[int(0.9 * (len(lengths) - 1))]
    words = set(re.findall(r"\w+(?:-\w+)*", " ".join(line for line, _ in lines).lower()))
    pieces: list[Piece] = []
    text, page, last = "", None, ""
    for line, number in lines:
        split = _SPLIT_WORD.search(last) if text else None
        following = _FIRST_WORD.match(line)
        if split and following:
            head, tail = split[1], following[1]
            hyphenated = f"{head}-{tail}".lower() in words and f"{head}{tail}".lower() not in words
            text = text[: -1] + ("-" if hyphenated else "") + line
        elif text and len(last) >= _FULL_WIDTH * full and not is_heading(last) and (
                not _starts_unit(line, full) or not _SENTENCE_END.search(last)):
            text += " " + line
        else:
            if text:
                pieces.append(Piece(text, page))
            text, page = line, number
        last = line
    pieces.append(Piece(text, page))
    return pieces


def _starts_unit(line: str, full: int) -> bool:
    """Whether a line opens a paragraph, point or heading. A heading is a short line without a sentence's
    end: "Article 127(2) TFEU, should be exempted." wrapped onto a line of its own is not one."""
    heading = is_heading(line) and len(line) < _HEADING_WIDTH * full and not line.endswith((".", ",", ";"))
    return heading or bool(_UNIT_START.match(line))
