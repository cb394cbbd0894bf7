"""DOCX -> paragraphs, headings and table rows (python-docx), in the body's order.

Headings are the paragraphs styled "Title" (level 1) or "Heading N" (level N + 1). Word numbers list
paragraphs itself (the numbers are not in the text): each numbered paragraph gets the label Word shows,
"1.", "(a)", "(iii)", "2.1", from the numbering definitions, so legal paragraphs and points are found
as in a text file. A table row becomes one line, its cells joined by " | " (a merged cell once). Page
headers, footers and comments are not part of the body and are left out.
"""

from __future__ import annotations

import io
import re

from docx.oxml.ns import qn

from repos_index.documents import BadDocument, Piece, letters, roman

_HEADING_STYLE = re.compile(r"^Heading (\d)$")


def docx_pieces(data: bytes) -> list[Piece]:
    from docx import Document
    from docx.table import Table

    try:
        document = Document(io.BytesIO(data))
        numbering = _Numbering(document)
        pieces = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                pieces.extend(Piece(row) for row in _rows(item))
            elif item.text.strip():
                label = numbering.label(item)
                text = f"{label} {item.text}" if label else item.text
                pieces.append(Piece(text, level=_level(item.style.name if item.style is not None else "")))
    except Exception as exc:  # a broken zip, a missing part or bad XML: python-docx raises many kinds
        raise BadDocument(f"damaged DOCX ({type(exc).__name__}: {exc})") from exc
    return pieces


def _level(style: str) -> int | None:
    if style == "Title":
        return 1
    m = _HEADING_STYLE.match(style)
    return int(m[1]) + 1 if m else None


def _rows(table) -> list[str]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return rows


_PLACEHOLDER = re.compile(r"%([1-9])")


class _Numbering:
    """Word's list numbers: counters per list and level, formatted by each level's `numFmt` and `lvlText`."""

    def __init__(self, document) -> None:
        try:
            root = document.part.numbering_part.element
        except (KeyError, NotImplementedError):  # no numbering part: nothing is numbered
            root = None
        self.abstract = {} if root is None else {
            item.get(qn("w:abstractNumId")): item for item in root.findall(qn("w:abstractNum"))}
        self.lists = {} if root is None else {
            item.get(qn("w:numId")): item.find(qn("w:abstractNumId")).get(qn("w:val"))
            for item in root.findall(qn("w:num")) if item.find(qn("w:abstractNumId")) is not None}
        self.counters: dict[str, list[int]] = {}

    def label(self, paragraph) -> str | None:
        """The number Word shows before `paragraph`, or None (not numbered, or a bullet)."""
        found = _num_pr(paragraph)
        if found is None:
            return None
        num_id, level = found
        definition = self.abstract.get(self.lists.get(num_id, ""))
        if definition is None:
            return None
        levels = {int(lvl.get(qn("w:ilvl"), "0")): lvl for lvl in definition.findall(qn("w:lvl"))}
        if level not in levels:
            return None
        counters = self.counters.setdefault(num_id, [0] * 9)
        for deeper in range(level + 1, 9):
            counters[deeper] = 0
        counters[level] = counters[level] + 1 if counters[level] else _value(levels[level], "w:start", 1)
        text = _value(levels[level], "w:lvlText", "")
        if _value(levels[level], "w:numFmt", "decimal") in ("bullet", "none") or not text:
            return None

        def shown(m: re.Match) -> str:
            at = int(m[1]) - 1
            fmt = _value(levels[at], "w:numFmt", "decimal") if at in levels else "decimal"
            count = counters[at] or (_value(levels[at], "w:start", 1) if at in levels else 1)
            return _format(count, fmt)

        return _PLACEHOLDER.sub(shown, text).strip() or None


def _num_pr(paragraph) -> tuple[str, int] | None:
    """(numId, level) of a numbered paragraph, set on it or on its style (or the style's bases)."""
    candidates = [paragraph._p.pPr]
    style = paragraph.style
    while style is not None:
        candidates.append(style.element.pPr)
        style = style.base_style
    for ppr in candidates:
        num_pr = ppr.numPr if ppr is not None else None
        if num_pr is not None and num_pr.numId is not None:
            if num_pr.numId.val == 0:  # numbering switched off
                return None
            return str(num_pr.numId.val), num_pr.ilvl.val if num_pr.ilvl is not None else 0
    return None


def _value(level, tag: str, default):
    element = level.find(qn(tag))
    value = element.get(qn("w:val")) if element is not None else None
    if value is None:
        return default
    return int(value) if isinstance(default, int) and value.lstrip("-").isdigit() else value


def _format(count: int, fmt: str) -> str:
    if fmt in ("lowerLetter", "upperLetter"):
        return letters(count, fmt == "upperLetter")
    if fmt in ("lowerRoman", "upperRoman"):
        return roman(count, fmt == "upperRoman")
    return str(count)
