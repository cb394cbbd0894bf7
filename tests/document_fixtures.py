"""Documents made by the tests (no binary fixtures in the repository): a two-page regulation as PDF with
running headers and footers and Article 4 on page 2, the same kind of text as an HTML page wrapped in
boilerplate and as a DOCX with heading styles, and the bad documents ingest must skip."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

from conftest import DATA

ARTICLE_4_DEFINITION = "'ICT risk' means any reasonably identifiable circumstance in relation to the use of network"
PAGE_1 = """REGULATION (EU) 2099/1 OF THE EUROPEAN PARLIAMENT on digital operational resilience

Article 1
Subject matter
1. This Regulation lays down uniform requirements concerning the security of network and information systems
supporting the business processes of financial entities, including their non-financial subsidiaries.

Article 2
Scope
1. This Regulation applies to credit institutions, payment institutions and electronic money institutions
established in the Union, and to central securities depositories and their opera-
tors of trading venues.

Article 3
Reporting of incidents
1. Financial entities shall report major incidents to the competent authority within four hours."""
PAGE_2 = f"""Article 4
Definitions
For the purposes of this Regulation, the following definitions apply:
(a) {ARTICLE_4_DEFINITION} and information systems which, if materialised, may compromise the security of data;
(b) 'major incident' means an incident that has a high adverse impact on the network and information systems;
(c) 'threat-led penetration testing' means a framework that mimics the tactics of real-life threat actors.

Article 5
Governance
1. The management body of the financial entity shall define and approve the ICT risk management framework."""


def write_pdf(path: Path, pages: tuple[str, ...] = (PAGE_1, PAGE_2), password: str | None = None) -> Path:
    """A PDF with one page per text (flowing onto more pages when long), a running header ("Official
    Journal ... L 333/N") and a page number. The texts must be Latin-1 (the PDF core fonts)."""
    from fpdf import FPDF

    class Journal(FPDF):
        def header(self) -> None:
            self.set_font("Helvetica", size=8)
            self.cell(0, 5, f"Official Journal of the European Union   L 333/{self.page_no()}",
                      new_x="LMARGIN", new_y="NEXT")

        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", size=8)
            self.cell(0, 5, str(self.page_no()), align="C")

    pdf = Journal()
    pdf.set_font("Helvetica", size=10)
    for text in pages:
        pdf.add_page()
        # the text's own line breaks are the PDF's lines, like a justified column; the printed
        # line break inside "opera-/tors" is a word hyphenated at the line end
        pdf.multi_cell(0, 5, text)
    data = bytes(pdf.output())
    if password is not None:
        data = _encrypt(data, password)
    path.write_bytes(data)
    return path


def _encrypt(data: bytes, password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def write_image_pdf(path: Path) -> Path:
    """A scanned page: an image and no text layer."""
    from fpdf import FPDF
    from PIL import Image

    pdf = FPDF()
    pdf.add_page()
    pdf.image(Image.new("L", (200, 280), 230), x=10, y=10, w=190)
    path.write_bytes(bytes(pdf.output()))
    return path


HTML = f"""<!DOCTYPE html>
<html lang="en"><head><title>Regulation 2099/1 - Portal</title><meta charset="utf-8">
<script>var tracking = "cookie-tracker";</script><style>body {{ color: black }}</style></head>
<body>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience.
<button>Accept all</button></div>
<header class="site-header"><a href="/">Home</a> <nav><ul><li>Legislation</li><li>Case law</li></ul></nav></header>
<div class="breadcrumb">Home / Legislation / 2099/1</div>
<main>
<h1>Regulation (EU) 2099/1 on digital operational resilience</h1>
<h2>Chapter I General provisions</h2>
<h3>Article 1 Subject matter</h3>
<p>This Regulation lays down uniform requirements concerning the security of network and information systems.</p>
<h3>Article 4 Definitions</h3>
<p>For the purposes of this Regulation, the following definitions apply:</p>
<ol type="a">
<li>{ARTICLE_4_DEFINITION} and information systems;</li>
<li>'major incident' means an incident that has a high adverse impact on the network.</li>
</ol>
<h2>Chapter II ICT risk management</h2>
<h3>Article 5 Governance</h3>
<ol><li>The management body shall define and approve the ICT risk management framework.</li>
<li><p>The management body shall bear the ultimate responsibility for managing ICT risk.</p></li></ol>
<table><tr><td>Entity</td><td>Deadline</td></tr><tr><td>Credit institution</td><td>4 hours</td></tr></table>
</main>
<aside class="related">Related documents: Directive 2099/2</aside>
<footer>Copyright European Union. <a href="/legal">Legal notice</a></footer>
</body></html>
"""

BOILERPLATE_WORDS = ("cookies", "Accept all", "Legislation", "Case law", "Related documents", "Copyright",
                     "tracking", "color", "Portal")

EMPTY_HTML = """<html><head><title>Loading</title><script>render()</script></head>
<body><nav><a href="/">Home</a></nav><div class="cookie-notice">We use cookies.</div>
<footer>© 2099</footer></body></html>
"""


def write_html(path: Path, html: str = HTML) -> Path:
    path.write_text(html, encoding="utf-8")
    return path


def write_docx(path: Path) -> Path:
    """A draft with heading styles (Title, Heading 1, Heading 2), paragraphs and points numbered by Word
    (the labels are not in the text) and a table."""
    from docx import Document

    document = Document()
    document.add_heading("Draft Regulation 2099/1 on digital operational resilience", 0)
    document.add_heading("Chapter I General provisions", 1)
    document.add_heading("Article 1 Subject matter", 2)
    document.add_paragraph("1. This Regulation lays down uniform requirements on the security of network systems.")
    document.add_heading("Article 4 Definitions", 2)
    document.add_paragraph("For the purposes of this Regulation, the following definitions apply:")
    points = _letter_list(document)
    for text in (f"{ARTICLE_4_DEFINITION} and information systems;",
                 "'major incident' means an incident that has a high adverse impact on the network."):
        number_pr = document.add_paragraph(text)._p.get_or_add_pPr().get_or_add_numPr()
        number_pr.get_or_add_numId().val = points
        number_pr.get_or_add_ilvl().val = 0
    document.add_heading("Chapter II ICT risk management", 1)
    document.add_heading("Article 5 Governance", 2)
    document.add_paragraph("The management body shall define and approve the ICT risk management framework.",
                           style="List Number")
    document.add_paragraph("The management body shall bear the ultimate responsibility for managing ICT risk.",
                           style="List Number")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, (("Entity", "Deadline"), ("Credit institution", "4 hours")), strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    document.save(str(path))
    return path


def _letter_list(document, num_id: int = 90) -> int:
    """Add a list numbered "(a)", "(b)", ... as Word defines one; returns its numId."""
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    numbering = document.part.numbering_part.element
    numbering.insert(0, parse_xml(  # abstract definitions come before the lists that use them
        f'<w:abstractNum {nsdecls("w")} w:abstractNumId="{num_id}"><w:lvl w:ilvl="0"><w:start w:val="1"/>'
        '<w:numFmt w:val="lowerLetter"/><w:lvlText w:val="(%1)"/></w:lvl></w:abstractNum>'))
    numbering.append(parse_xml(f'<w:num {nsdecls("w")} w:numId="{num_id}"><w:abstractNumId w:val="{num_id}"/>'
                               '</w:num>'))
    return num_id


def write_broken_docx(path: Path) -> Path:
    """A DOCX cut short, as by an interrupted download: a broken zip."""
    path.write_bytes(write_docx(path).read_bytes()[:300])
    return path


def dora(until: str = "Article 6") -> str:
    """DORA's text (shared data) up to the heading `until`."""
    text = (DATA / "legal" / "eu_dora_2022_2554.txt").read_text(encoding="utf-8")
    return text[: text.index(f"\n{until}\n") + 1]


def latin1(text: str) -> str:
    """Text the PDF core fonts can print: typographic quotes and dashes made plain."""
    for fancy, plain in (("‘’", "'"), ("“”", '"'), ("–—", "-")):
        for char in fancy:
            text = text.replace(char, plain)
    return text.encode("latin-1", "replace").decode("latin-1")


def eurlex_html(text: str) -> str:
    """A legal text laid out as EUR-Lex pages lay one out: a <p> per line, classes for Article headings, each
    point a table row of its label and its text; with a cookie notice, navigation and a footer around it."""
    body = []
    for line in filter(None, (line.strip() for line in text.split("\n"))):
        point = re.match(r"^(\(\w{1,4}\))\s+(.*)$", line)
        if point:
            body.append(f'<table width="100%"><col width="4%"/><tbody><tr><td><p class="oj-normal">{point[1]}</p>'
                        f'</td><td><p class="oj-normal">{html.escape(point[2])}</p></td></tr></tbody></table>')
        else:
            kind = "oj-ti-art" if re.match(r"^Article \d+\w?$", line) else "oj-normal"
            body.append(f'<p class="{kind}">{html.escape(line)}</p>')
    return ('<html><body><div id="cookie-consent">We use cookies <button>OK</button></div><nav>Home | Search</nav>'
            '<div id="document1">' + "\n".join(body) + "</div><footer>Legal notice</footer></body></html>")
