"""Legal and prose structure: the DORA regulation end to end, a statute, a contract, Markdown, plain text."""

from __future__ import annotations

import shutil

import pytest
from conftest import DATA
from index_helpers import FIXTURES, FakeMemory

from repos_index.chunking import analyze, chunk_file, detect_language
from repos_index.index import CorpusIndex
from repos_index.legal import looks_legal
from repos_index.prose import PARAGRAPH_CHARS

DORA = DATA / "legal" / "eu_dora_2022_2554.txt"
DORA_NAME = DORA.name


@pytest.fixture(scope="module")
def dora():
    return analyze(DORA.read_text(encoding="utf-8"), "legal")


@pytest.fixture(scope="module")
def dora_index(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("dora")
    shutil.copy(DORA, corpus / DORA_NAME)
    memory = FakeMemory(lines_per_block=40)
    index = CorpusIndex(tmp_path_factory.mktemp("db") / "index.db", corpus)
    report = index.update(memory, progress=False)
    assert report.ingested == [DORA_NAME]
    return index, memory


def test_dora_is_recognised_as_legal_text_and_a_novel_is_not():
    assert detect_language(DORA, DORA.read_text(encoding="utf-8")) == "legal"
    assert detect_language("pride.txt", (DATA / "haystack" / "pride.txt").read_text(encoding="utf-8")) == "text"


def test_every_dora_article_has_its_number_and_title(dora):
    articles = [c for c in dora.chunks if c.kind == "article"]
    assert [c.name for c in articles] == [f"Article {n}" for n in range(1, 65)]
    assert all(c.title for c in articles)
    titles = {c.name: c.title for c in articles}
    assert titles["Article 1"] == "Subject matter"
    assert titles["Article 3"] == "Definitions"
    assert titles["Article 28"] == "General principles"
    assert titles["Article 33"] == "Tasks of the Lead Overseer"
    assert titles["Article 64"] == "Entry into force and application"
    lines = DORA.read_text(encoding="utf-8").split("\n")
    assert all(lines[c.line_start - 1] == c.name for c in articles)
    # "Article 26 is amended as follows:" inside an amending article is a sentence, not a heading
    assert all(a.line_end < b.line_start for a, b in zip(articles, articles[1:], strict=False))


def test_dora_structure_nests_chapters_sections_articles_paragraphs_points(dora):
    by_ordinal = {c.ordinal: c for c in dora.chunks}
    chapters = [c for c in dora.chunks if c.kind == "chapter"]
    assert [c.name for c in chapters] == [f"Chapter {n}" for n in "I II III IV V VI VII VIII IX".split()]
    assert chapters[1].title == "ICT risk management"
    article5 = next(c for c in dora.chunks if c.name == "Article 5")
    assert article5.qualname == "Chapter II / Section I / Article 5"
    paragraph = next(c for c in dora.chunks if c.name == "Article 2(1)")
    assert by_ordinal[paragraph.parent].name == "Article 2"
    point = next(c for c in dora.chunks if c.name == "Article 1(1)(a)(ii)")  # a roman point inside a letter point
    assert by_ordinal[point.parent].name == "Article 1(1)(a)"
    recitals = [c for c in dora.chunks if c.kind == "recital"]
    assert [c.name for c in recitals] == [f"Recital {n}" for n in range(1, 107)]
    assert by_ordinal[recitals[0].parent].kind == "preamble"


def test_dora_article_3_defined_terms(dora):
    article3 = next(c for c in dora.chunks if c.name == "Article 3")
    terms = [s for s in dora.symbols if s.kind == "term" and article3.line_start <= s.line_start <= article3.line_end]
    assert len(terms) == 65
    names = [t.name for t in terms]
    assert names[:3] == ["digital operational resilience", "network and information system", "legacy ICT system"]
    assert {"ICT risk", "critical ICT third-party service provider", "Lead Overseer", "public authority"} <= set(names)
    by_ordinal = {c.ordinal: c for c in dora.chunks}
    assert [by_ordinal[t.chunk].name for t in terms] == [f"Article 3, point ({n})" for n in range(1, 66)]


def test_dora_cross_references_are_edges_with_their_paragraph_and_act(dora):
    refs = {(x.line, x.text, x.target, x.detail, x.external) for x in dora.xrefs}
    assert (2592, "Article 31(1)", "Article 31", "1", None) in refs
    assert (2598, "paragraph 2", "Article 33", "2", None) in refs  # inside Article 33
    assert (959, "Article 33(1)", "Article 33", "1", "Directive (EU) 2015/2366") in refs
    ranges = {(x.line, x.target) for x in dora.xrefs if x.text.startswith("Articles 10 to 14")}
    assert {t for _, t in ranges} == {f"Article {n}" for n in range(10, 15)}
    treaty = [x for x in dora.xrefs if x.text == "Article 114"]
    assert treaty and all(x.external for x in treaty)


def test_find_section_returns_the_article_with_title_spans_and_blocks(dora_index):
    index, memory = dora_index
    [section] = index.find_section("Article 33")
    assert (section.label, section.title, section.kind) == ("Article 33", "Tasks of the Lead Overseer", "article")
    assert (section.line_start, section.line_end) == (2588, 2651)
    data = DORA.read_bytes()
    body = data[section.byte_start:section.byte_end].decode()
    assert body.startswith("Article 33\n") and body.rstrip().endswith(
        DORA.read_text(encoding="utf-8").split("\n")[2650].strip())
    expected = [b.block_id for b in memory.docs[DORA_NAME][1] if b.line_start <= 2651 and b.line_end >= 2588]
    assert section.blocks == expected and expected
    assert index.blocks_for(DORA_NAME, 2588, 2651) == expected
    assert [s.label for s in index.find_section("art. 33(1)")] == ["Article 33(1)"]
    assert [s.label for s in index.find_section("33")] == ["Article 33"]
    assert [s.label for s in index.find_section("tasks of the lead overseer")] == ["Article 33"]
    assert "Article 28" in [s.label for s in index.find_section("General principles")]


def test_following_cross_references_both_ways(dora_index):
    index, _ = dora_index
    outgoing = {(x.text, x.resolved.label if x.resolved else None) for x in index.cross_references("Article 33")}
    assert ("Article 31(1)", "Article 31(1)") in outgoing
    assert ("Article 34(1)", "Article 34(1)") in outgoing
    assert ("paragraph 2", "Article 33(2)") in outgoing
    incoming = index.cross_references("Article 33", incoming=True)
    sources = {x.source for x in incoming}
    assert "Article 35(1)(d)" in sources  # "the areas referred to in Article 33(3)"
    assert all(x.external is None for x in incoming)  # Article 33(1) of Directive (EU) 2015/2366 is not ours


def test_defined_terms_are_symbols_with_blocks(dora_index):
    index, _ = dora_index
    [term] = index.find_symbol("ICT risk")
    assert (term.kind, term.qualname) == ("term", "Article 3, point (5): ICT risk")
    assert term.blocks
    assert index.find_symbol("ict RISK")[0].qualname == term.qualname


def test_statute_with_section_signs(tmp_path):
    path = FIXTURES / "docs" / "statute.txt"
    analysis = analyze(path.read_text(), detect_language(path, path.read_text()))
    assert analysis.language == "legal"
    sections = [(c.name, c.title) for c in analysis.chunks if c.kind == "section"]
    assert sections == [("§ 1", "Purpose"), ("§ 2", "Definitions"), ("§ 3", "Retention period"), ("§ 4", "Exceptions")]
    assert {s.name for s in analysis.symbols} == {"customer record", "provider"}
    refs = {(x.text, x.target, x.detail, x.external) for x in analysis.xrefs}
    assert ("§ 4", "§ 4", None, None) in refs
    assert ("Paragraph 1", "§ 3", "1", None) in refs
    assert ("§ 5", "§ 5", None, "the Archives Act") in refs


def test_a_wrapped_line_that_starts_like_a_heading_stays_text():
    """PDF conversions wrap sentences anywhere: "... set out in Part II of" / "Annex I." is a reference, and
    taking it for the Annex would file every Article after it under "Annex I" (seen in the CRA)."""
    text = ("Article 1\nScope\n1. Products shall meet the requirements set out in Part II of\nAnnex I.\n\n"
            "Article 2\nDefinitions\n1. Terms used.\n\nArticle 3\nPenalties\n1. Fines apply.\n\n"
            "ANNEX I\nESSENTIAL REQUIREMENTS\n1. Products shall be secure.\n")
    chunks = analyze(text, "legal").chunks
    assert [(c.name, c.line_start) for c in chunks if c.kind in ("article", "annex")] == [
        ("Article 1", 1), ("Article 2", 6), ("Article 3", 10), ("Annex I", 14)]


def test_a_long_title_set_off_by_a_colon_is_a_heading_and_a_long_sentence_is_not():
    """Markdown conversions write "## Article 52: <title>"; the CRA's Articles 52, 54 and 56 have titles of 13-16
    words, and their paragraphs were filed under no Article. A line that starts with a cited paragraph ("Article
    10(1) of ...", a wrapped sentence) is no heading."""
    text = ("## Article 1: Scope\n1. Products are covered.\n\n"
            "## Article 2: Market surveillance and control of products with digital elements in the Union market\n"
            "1. Authorities shall check products.\n\n"
            "Article 3 of Regulation (EU) 2019/1020 shall apply to products with digital elements within the scope\n"
            "of this Regulation, as does\nArticle 10(1) of Regulation (EU) No 1025/2012; or\n\n"
            "## Article 4: Penalties\n1. Fines apply.\n")
    chunks = analyze(text, "legal").chunks
    assert [(c.name, c.line_start) for c in chunks if c.kind == "article"] == [
        ("Article 1", 1), ("Article 2", 4), ("Article 4", 11)]


def test_markdown_list_bullets_before_recitals_and_points():
    """Conversions from EUR-Lex XML write recitals and points as Markdown list items ("- (1) ...", "   - (a)
    ..."): they are recitals and points as without the bullet (NIS2's 144 recitals were read as plain text, so
    addressing could not put the Articles before them)."""
    text = ("## Recitals\n\n- (1) Cyber threats grow.\n\n- (2) Entities should report.\n\n## Enacting Terms\n\n"
            "### Article 1\n\n**Subject matter**\n\n1. This Directive lays down:\n\n   - (a) obligations;\n\n"
            "   - (b) rules.\n\n### Article 2\n\n**Scope**\n\n1. It applies to entities.\n")
    chunks = analyze(text, "legal").chunks
    assert [(c.kind, c.name) for c in chunks if c.kind in ("recital", "article", "point")] == [
        ("recital", "Recital 1"), ("recital", "Recital 2"), ("article", "Article 1"),
        ("point", "Article 1(1)(a)"), ("point", "Article 1(1)(b)"), ("article", "Article 2")]


def test_contract_clauses_and_parenthetical_terms():
    path = FIXTURES / "docs" / "contract.txt"
    analysis = analyze(path.read_text(), detect_language(path, path.read_text()))
    assert analysis.language == "legal"
    headings = [(c.name, c.title) for c in analysis.chunks if c.kind == "section"]
    assert headings == [("Section 1", "Definitions"), ("Section 2", "Services"), ("Section 3", "Fees and Payment")]
    clauses = [c.name for c in analysis.chunks if c.kind == "paragraph"]
    assert clauses == ["Section 1.1", "Section 1.2", "Section 2.1", "Section 3.1", "Section 3.2"]
    assert {s.name for s in analysis.symbols} == {"Agreement", "Supplier", "Customer", "Services", "Fees"}
    assert ("Section 3.1", 19) in {(x.target, x.line) for x in analysis.xrefs}


def test_markdown_by_headings():
    chunks = chunk_file(FIXTURES / "docs" / "README.md")
    assert [(c.name, c.qualname, c.line_start, c.line_end) for c in chunks] == [
        ("Geometry toolkit", "Geometry toolkit", 1, 23),
        ("Installation", "Geometry toolkit / Installation", 5, 12),  # the "# comment" in the code block is no heading
        ("Usage", "Geometry toolkit / Usage", 14, 18),
        ("Shapes", "Geometry toolkit / Usage / Shapes", 16, 18),
        ("Limitations", "Geometry toolkit / Limitations", 20, 23),  # a setext heading
    ]


def test_plain_text_by_paragraphs():
    text = (DATA / "haystack" / "pride.txt").read_text(encoding="utf-8")[:20000]
    chunks = chunk_file(text, "text")
    assert len(chunks) > 10 and all(c.kind == "paragraph" for c in chunks)
    lines = text.split("\n")
    covered = [n for c in chunks for n in range(c.line_start, c.line_end + 1) if lines[n - 1].strip()]
    assert covered == [n for n in range(1, len(lines) + 1) if lines[n - 1].strip()]  # every text line, once
    for chunk in chunks:
        assert chunk.line_start == 1 or not lines[chunk.line_start - 2].strip()  # whole paragraphs only
        assert chunk.line_end == len(lines) or not lines[chunk.line_end].strip()
        body = lines[chunk.line_start - 1:chunk.line_end]
        if any(not line.strip() for line in body):  # several paragraphs grouped: within the size budget
            assert sum(len(line.encode()) for line in body if line.strip()) <= PARAGRAPH_CHARS


def test_looks_legal_needs_provisions_not_just_numbered_lists():
    assert not looks_legal("Shopping\n\n1. Milk\n\n2. Eggs\n\n3. Bread\n")
    assert looks_legal("Article 1\n\nScope\n\nArticle 2\n\nTerms\n\nArticle 3\n\nEnd\n")


@pytest.mark.parametrize("text, legal", [
    ("### Article 24\n\n**Use of European cybersecurity certification schemes**\n\n1. In order to ...\n", True),
    ("\n\nArticle 35 - Infringements entailing a personal data breach\n\n1. Where ...\n", True),
    ("§ 5 Kündigung\n\n(1) Der Vertrag ...\n", True),
    ("Article about cats\n\nCats sleep a lot.\n", False),          # no number: not a provision
    ("Notes\n\nArticle 24 says the schemes apply.\n", False),      # a mention, not the opening heading
    ("Section 1\n\nIntroduction to the book\n", False),            # a book's section
])
def test_a_text_that_opens_with_one_provision_is_legal(text, legal):
    assert looks_legal(text) is legal
