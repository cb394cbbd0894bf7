"""Batch mechanics without a model: resumption after a torn write, bad input files, progress."""

from __future__ import annotations

import json

import pytest

from agent.batch import run_batch
from l2m_core.errors import L2MError
from repos_index import progress


def fake_ask(question: str, max_tokens: int) -> dict:
    return {"answer": question.upper(), "citations": []}


def test_resume_skips_finished_ids_and_redoes_a_torn_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "question": f"q{i}"}) + "\n" for i in range(4)))
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "0", "answer": "Q0"}) + "\n" + '{"id": "1", "ans')  # killed mid-write
    report = run_batch(fake_ask, src, out)
    assert report.skipped == 1 and report.answered == 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["0", "1", "2", "3"] and records[1]["answer"] == "Q1"


def test_missing_and_binary_input_files(tmp_path):
    with pytest.raises(L2MError, match="no such input file"):
        run_batch(fake_ask, tmp_path / "nope.jsonl", tmp_path / "out.jsonl")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(L2MError, match="not UTF-8"):
        run_batch(fake_ask, binary, tmp_path / "out.jsonl")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n")
    with pytest.raises(L2MError, match="holds no questions"):
        run_batch(fake_ask, blank, tmp_path / "out.jsonl")


def test_progress_counts_the_questions_answered_on_a_stderr_that_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    """A long batch from a script says how far it is (here a line a question: the interval is set to 0); a
    malformed line is no question, and nothing is said without `progress`."""
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    src = tmp_path / "in.jsonl"
    src.write_text('{"question": "a"}\nnot json\n{"question": "b"}\n')
    run_batch(fake_ask, src, tmp_path / "quiet.jsonl")
    assert capsys.readouterr() == ("", "")
    run_batch(fake_ask, src, tmp_path / "out.jsonl", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and [line.split(",")[0] for line in err.splitlines()] == [
        "answering: 1/2 questions", "answering: 2/2 questions"]
    assert " questions/s" in err.splitlines()[-1]
