"""Questions on PDF, HTML and DOCX documents: the citation names the Article's page (PDF) or heading path.

With a tiny random model the answer text means nothing; what is tested is the citation: the Article the
question names is pinned, and its citation carries the page or heading path of those lines. One test
asks the real default model about the PDF.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from document_fixtures import write_docx, write_html, write_image_pdf, write_pdf

from agent import Agent
from agent.langchain import L2MRetriever
from l2m_core.loading import load_model

QUESTION = "What does Article 4 define?"
WRITERS = {"reg.pdf": write_pdf, "reg.html": write_html, "reg.docx": write_docx}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


def _pinned_citation(agent: Agent, name: str, article: str = "Article 4"):
    """The answer's first citation, checked to hold the blocks of the Article that the question pinned."""
    section = next(s for s in agent.index.find_section(article) if s.path == name)
    answer = agent.ask(QUESTION.replace("Article 4", article), max_new_tokens=4)
    first = answer.citations[0]
    assert first.source == name
    assert set(section.blocks[:2]) <= set(first.block_ids)
    return answer, first


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_question_naming_an_article_cites_its_page_or_heading_path(tiny, tmp_path, name):
    root = tmp_path / "corpus"
    root.mkdir()
    WRITERS[name](root / name)
    with Agent.open(root, model=tiny) as agent:
        report = agent.ingest()
        assert report.ingested == [name]
        answer, first = _pinned_citation(agent, name)
        before = _pinned_citation(agent, name, "Article 3")[1] if name == "reg.pdf" else None
        [document] = L2MRetriever.from_agent(agent, k=1).invoke(QUESTION)
    assert {key: document.metadata[key] for key in ("source", "page", "heading")} == {
        "source": name, "page": first.page, "heading": first.heading}
    cited = answer.to_dict()["citations"][0]
    assert first.label.startswith("Article 4")  # the lead's label: the enclosing Article (or its point)
    if name == "reg.pdf":
        assert first.page == 2 and first.heading is None
        assert f"{name}:{first.line_start}-{first.line_end} p.2 {first.label}" == str(first)
        assert cited["page"] == 2 and "heading" not in cited
        assert before.page == 1
    else:
        assert first.page is None and first.heading.endswith("Article 4 Definitions")
        assert str(first).endswith(f"[{first.heading}]")
        assert cited["heading"] == first.heading and "page" not in cited


def l2m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_skips_a_bad_document_with_one_warning_and_cites_the_page(tmp_path, tiny_model_dir):
    write_pdf(tmp_path / "reg.pdf")
    write_image_pdf(tmp_path / "scan.pdf")
    done = l2m("ingest", "--model", str(tiny_model_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.split("\n") if "scan.pdf" in line] == [
        "warning scan.pdf: no text layer (a scanned or image-only PDF needs OCR first); skipped"]
    done = l2m("ask", QUESTION, "--max-tokens", "4", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)["citations"][0]
    assert first["source"] == "reg.pdf" and first["page"] == 2


@pytest.mark.model
def test_the_default_model_answers_from_the_pdf_citing_page_and_article(default_model, tmp_path):
    write_pdf(tmp_path / "reg.pdf")
    with Agent.open(tmp_path, model=default_model) as agent:
        agent.ingest()
        article = next(s for s in agent.index.find_section("Article 4") if s.path == "reg.pdf")
        answer = agent.ask(QUESTION, max_new_tokens=48)
    first = answer.citations[0]
    assert first.source == "reg.pdf" and first.page == 2 and first.label.startswith("Article 4")
    assert first.line_start <= article.line_end and first.line_end >= article.line_start  # cites Article 4
