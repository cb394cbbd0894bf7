"""PDF, HTML and DOCX documents: their text and structure, pages and heading paths, bad documents, re-ingest."""

from __future__ import annotations

import hashlib

import pytest
from document_fixtures import (
    ARTICLE_4_DEFINITION,
    BOILERPLATE_WORDS,
    EMPTY_HTML,
    dora,
    eurlex_html,
    latin1,
    write_broken_docx,
    write_docx,
    write_html,
    write_image_pdf,
    write_pdf,
)
from index_helpers import FakeMemory
from sqlalchemy import select

from repos_index import schema
from repos_index.documents import Piece, convert, render
from repos_index.index import CorpusIndex
from repos_index.legal import analyze_legal

WRITERS = {"reg.pdf": write_pdf, "reg.html": write_html, "reg.docx": write_docx}


def _inside(index: CorpusIndex, section) -> dict:
    """What `enclosing` says of the section's blocks whose middle line lies in it (not of a neighbour's)."""
    middles = {b: (first + last) // 2 for b, first, last in _block_spans(index, section.path)}
    inside = [b for b in section.blocks if section.line_start <= middles[b] <= section.line_end]
    assert inside
    return index.enclosing(inside)


def _block_spans(index: CorpusIndex, path: str) -> list[tuple[int, int, int]]:
    b, f = schema.blocks, schema.files
    with index.engine.connect() as conn:
        return conn.execute(select(b.c.block_id, b.c.line_start, b.c.line_end).join(f, f.c.id == b.c.file_id)
                            .where(f.c.path == path)).all()


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.split("\n"), start=1) if needle in line)


def _place(converted, line: int):
    return next(p for p in converted.places if p.line_start <= line <= p.line_end)


def test_pdf_text_keeps_articles_and_pages_without_running_headers_or_hyphenation(tmp_path):
    converted = convert("reg.pdf", write_pdf(tmp_path / "reg.pdf").read_bytes())
    text = converted.text
    assert converted.language == "legal"
    assert "Official Journal" not in text
    assert not any(line.strip().isdigit() for line in text.split("\n"))  # page numbers
    assert "their operators of trading venues" in text  # "opera-" / "tors" rejoined
    assert "non-financial subsidiaries" in text and "threat-led penetration" in text  # real hyphens kept
    assert "1. This Regulation applies to credit institutions" in text  # a paragraph rejoined onto one line
    assert _place(converted, _line_of(text, "Article 4")).page == 2
    assert _place(converted, _line_of(text, "Article 3")).page == 1
    assert _place(converted, _line_of(text, ARTICLE_4_DEFINITION)).page == 2


def _units(text: str) -> list[tuple[str, str]]:
    return [(c.kind, c.name) for c in analyze_legal(text).chunks]


def test_a_regulation_printed_to_pdf_keeps_its_structure(tmp_path):
    """DORA up to Article 6, flowed over pages of 100-character lines with running headers: the PDF's text
    has the same Chapters, Articles, recitals, paragraphs and points as the text file."""
    text = latin1(dora("Article 6"))
    converted = convert("dora.pdf", write_pdf(tmp_path / "dora.pdf", pages=(text,)).read_bytes())
    assert converted.places[-1].page > 10
    expected = _units(text)
    assert len(expected) > 200
    assert _units(converted.text) == expected


def test_a_regulation_as_an_eurlex_page_keeps_its_structure():
    text = dora("Article 10")
    converted = convert("dora.html", eurlex_html(text).encode())
    assert "cookies" not in converted.text and "Legal notice" not in converted.text
    expected = _units(text)
    assert len(expected) > 250 and ("point", "Article 3, point (1)") in expected
    assert _units(converted.text) == expected


def test_html_drops_boilerplate_and_keeps_headings_and_list_numbers(tmp_path):
    converted = convert("reg.html", write_html(tmp_path / "reg.html").read_bytes())
    text = converted.text
    for word in BOILERPLATE_WORDS:
        assert word not in text, word
    lines = text.split("\n")
    assert "Article 4 Definitions" in lines
    assert f"(a) {ARTICLE_4_DEFINITION} and information systems;" in lines  # <ol type="a">
    assert "2. The management body shall bear the ultimate responsibility for managing ICT risk." in lines
    assert "Credit institution | 4 hours" in lines
    heading = _place(converted, _line_of(text, ARTICLE_4_DEFINITION)).heading
    assert heading == ("Regulation (EU) 2099/1 on digital operational resilience > Chapter I General provisions > "
                       "Article 4 Definitions")


def test_docx_headings_make_the_heading_path_and_word_numbers_become_labels(tmp_path):
    converted = convert("reg.docx", write_docx(tmp_path / "reg.docx").read_bytes())
    text = converted.text
    assert converted.language == "legal"
    lines = text.split("\n")
    assert "Credit institution | 4 hours" in lines
    assert f"(a) {ARTICLE_4_DEFINITION} and information systems;" in lines  # a lowerLetter "(%1)" list
    assert "(b) 'major incident' means an incident that has a high adverse impact on the network." in lines
    assert "2. The management body shall bear the ultimate responsibility for managing ICT risk." in lines
    units = {c.name for c in analyze_legal(text).chunks}
    assert {"Article 4, point (a)", "Article 4, point (b)", "Article 5(1)", "Article 5(2)"} <= units
    assert _place(converted, _line_of(text, "Article 5 Governance")).heading.endswith(
        "Chapter II ICT risk management > Article 5 Governance")


def test_an_html_template_is_source_code_not_a_document(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    template = "<html><body>\n<nav>{% include 'menu.html' %}</nav>\n<p>Hello {{ user.name }}</p>\n</body></html>\n"
    (root / "base.html").write_text(template)
    index = CorpusIndex(tmp_path / "index.db", root)
    memory = FakeMemory()
    report = index.update(memory, progress=False)
    assert report.ingested == ["base.html"] and not report.bad_documents
    assert memory.live_sources()["base.html"] == hashlib.sha256(template.encode()).hexdigest()  # as written


def test_a_document_that_is_not_legal_becomes_markdown_by_its_headings():
    converted = render([Piece("Guide", level=1), Piece("Install it."), Piece("Usage", level=2), Piece("Run it.")])
    assert converted.language == "markdown"
    assert converted.text == "# Guide\n\nInstall it.\n\n## Usage\n\nRun it.\n"
    assert _place(converted, 7).heading == "Guide > Usage"


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for name, write in WRITERS.items():
        write(root / name)
    (root / "notes.txt").write_text("Plain notes about the regulation.\n")
    write_pdf(root / "locked.pdf", password="secret")
    write_image_pdf(root / "scan.pdf")
    write_broken_docx(root / "cut.docx")
    write_html(root / "empty.html", EMPTY_HTML)
    return root


BAD = {"locked.pdf": "encrypted", "scan.pdf": "no text layer", "cut.docx": "damaged DOCX", "empty.html": "no text"}


def test_the_legal_index_finds_the_articles_of_each_format_and_skips_bad_documents(corpus, tmp_path):
    index = CorpusIndex(tmp_path / "index.db", corpus)
    memory = FakeMemory()
    report = index.update(memory, progress=False)
    assert sorted(report.ingested) == ["notes.txt", "reg.docx", "reg.html", "reg.pdf"]
    assert not report.errors
    assert set(report.bad_documents) == set(BAD)
    for name, why in BAD.items():
        assert why in report.bad_documents[name]
    summary = report.summary().split("\n")
    assert summary[0].startswith("8 files: 4 added") and ", 0 unchanged, 4 bad documents (" in summary[0]
    warnings = [line for line in summary if line.startswith("warning ")]
    assert len(warnings) == len(BAD)  # one line each
    found = {s.path: s for s in index.find_section("Article 4")}
    assert set(found) == set(WRITERS)
    for section in found.values():
        assert section.title == "Definitions" or section.title is None  # HTML/DOCX carry it inline
        assert section.blocks
    assert {t.path for t in index.find_symbol("ICT risk")} == set(WRITERS)  # the defined term, in all three

    # what a citation of these blocks says: label, page (PDF), heading path (HTML, DOCX)
    assert {(e.label.split(",")[0], e.page, e.heading) for e in _inside(index, found["reg.pdf"]).values()} == {
        ("Article 4", 2, None)}
    for name in ("reg.html", "reg.docx"):
        for e in _inside(index, found[name]).values():
            assert e.label.startswith("Article 4") and e.page is None
            assert e.heading.endswith("Chapter I General provisions > Article 4 Definitions")
    article_3 = index.find_section("Article 3")[0]
    assert {e.page for e in _inside(index, article_3).values()} == {1}
    assert all(e.page is None and e.heading is None for e in index.enclosing(index.blocks_for("notes.txt")).values())


def test_reingest_is_incremental_and_a_reopened_index_still_knows_pages(corpus, tmp_path):
    index = CorpusIndex(tmp_path / "index.db", corpus)
    memory = FakeMemory()
    index.update(memory, progress=False)
    memory.take_calls()

    again = index.update(memory, progress=False)
    assert again.unchanged == 4 and not again.ingested and memory.take_calls() == []
    assert set(again.bad_documents) == set(BAD)  # still skipped, still said

    write_html(corpus / "reg.html", (corpus / "reg.html").read_text().replace("4 hours", "2 hours"))
    changed = index.update(memory, progress=False)
    assert changed.changed == ["reg.html"] and changed.ingested == ["reg.html"]

    write_docx(corpus / "cut.docx")  # the broken file replaced by a good one
    fixed = index.update(memory, progress=False)
    assert fixed.added == ["cut.docx"] and "cut.docx" not in fixed.bad_documents

    reopened = CorpusIndex(tmp_path / "index.db", corpus)
    pdf = next(s for s in reopened.find_section("Article 4") if s.path == "reg.pdf")
    assert {e.page for e in _inside(reopened, pdf).values()} == {2}


def test_a_document_that_turns_bad_leaves_the_index(corpus, tmp_path):
    index = CorpusIndex(tmp_path / "index.db", corpus)
    memory = FakeMemory()
    index.update(memory, progress=False)
    write_pdf(corpus / "reg.pdf", password="secret")
    report = index.update(memory, progress=False)
    assert report.deleted == ["reg.pdf"] and "reg.pdf" in report.bad_documents
    assert "reg.pdf" not in memory.live_sources()
    assert {s.path for s in index.find_section("Article 4")} == {"reg.docx", "reg.html"}
