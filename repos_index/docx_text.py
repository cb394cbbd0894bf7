"""DOCX -> paragraphs, headings and table rows (python-docx), in the body's order.

Headings are the paragraphs styled "Title" (level 1) or "Heading N" (level N + 1). A table row becomes
one line, its cells joined by " | " (a merged cell once). Page headers, footers and comments are not
part of the body and are left out.
"""

from __future__ import annotations

import io
import re

from repos_index.documents import BadDocument, Piece

_HEADING_STYLE = re.compile(r"^Heading (\d)$")


def docx_pieces(data: bytes) -> list[Piece]:
    from docx import Document
    from docx.table import Table

    try:
        document = Document(io.BytesIO(data))
        pieces = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                pieces.extend(Piece(row) for row in _rows(item))
            else:
                pieces.append(Piece(item.text, level=_level(item.style.name if item.style is not None else "")))
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
