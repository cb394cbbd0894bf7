"""Batch questions: JSONL in, JSONL answers with citations and timings out; resumable and forgiving.

Input lines are `{"question": "...", "id": optional, "max_tokens": optional}`. Each output line carries the
input's id (the line number when it has none). A rerun skips ids already answered in the output file. A
malformed line produces an error record and the batch goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from l2m_core.errors import L2MError
from repos_index.progress import IngestProgress


@dataclass
class BatchReport:
    answered: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"answered": self.answered, "skipped": self.skipped, "failed": self.failed}


def parse_line(number: int, line: str) -> dict:
    """One input line as `{"id", "question", "max_tokens"?}`; raises ValueError with a short reason."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict) or not isinstance(item.get("question"), str) or not item["question"].strip():
        raise ValueError('expected an object with a non-empty "question" string')
    return {**item, "id": str(item.get("id", f"line-{number}"))}


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text, split at newlines only: `str.splitlines` also splits at U+2028, U+0085 and
    other characters that JSON strings may hold unescaped, which would cut one record in two."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def answered_ids(out_path: Path) -> set[str]:
    """Ids with a finished answer in an earlier run's output (torn last lines are ignored)."""
    done: set[str] = set()
    if out_path.exists():
        for line in jsonl_lines(out_path.read_text(encoding="utf-8", errors="replace")):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "answer" in record:
                done.add(str(record.get("id")))
    return done


def run_batch(ask: Callable[[str, int], dict], in_path: Path, out_path: Path, max_new_tokens: int = 96,
              progress: bool = False) -> BatchReport:
    """Answer every question of `in_path` with `ask(question, max_tokens) -> dict`, appending to `out_path`."""
    def one_at_a_time(items: list[tuple[str, int]]) -> Iterator[dict | Exception]:
        for question, max_tokens in items:
            try:
                yield ask(question, max_tokens)
            except (L2MError, ValueError) as exc:
                yield exc

    return run_batch_all(one_at_a_time, in_path, out_path, max_new_tokens, progress)


def run_batch_all(answer_all: Callable[[list[tuple[str, int]]], Iterator[dict | Exception]], in_path: Path,
                  out_path: Path, max_new_tokens: int = 96, progress: bool = False) -> BatchReport:
    """`run_batch` where `answer_all([(question, max_tokens), ...])` yields, in order, each answer's dict or the
    `L2MError`/`ValueError` it failed with (several may be answered at once, as on a cluster). Each record is
    appended as soon as it and every one before it are done, in input order. `progress`: questions answered,
    the rate and the time left on stderr (`IngestProgress`)."""
    try:
        lines = jsonl_lines(in_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise L2MError(f"no such input file: {in_path}") from None
    except UnicodeDecodeError:
        raise L2MError(f"{in_path} is not UTF-8 text") from None
    _drop_torn_tail(out_path)
    done = answered_ids(out_path)
    report = BatchReport()
    todo: list[tuple[int, dict | None, str]] = []  # (line number, question or None, malformed reason)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = parse_line(number, line)
        except ValueError as exc:
            todo.append((number, None, str(exc)))
            continue
        if item["id"] in done:
            report.skipped += 1
            continue
        done.add(item["id"])  # a repeated id is answered once
        todo.append((number, item, ""))
    if not todo and not report.skipped:  # an empty file answered "0 answered" with exit 0
        raise L2MError(f"{in_path} holds no questions (one JSON object per line, with a \"question\")")
    answers = answer_all([(item["question"], int(item.get("max_tokens", max_new_tokens)))
                          for _, item, _ in todo if item is not None])
    with open(out_path, "a", encoding="utf-8") as out, IngestProgress(progress) as bar:
        if questions := sum(item is not None for _, item, _ in todo):
            bar.phase("answering", questions, 0, "questions")
        for number, item, malformed in todo:
            if item is None:
                record = {"id": f"line-{number}", "line": number, "error": f"malformed line: {malformed}"}
                report.failed.append(record["id"])
            else:
                answer = next(answers)
                if isinstance(answer, Exception):
                    record = {"id": item["id"], "line": number, "error": str(answer)}
                    report.failed.append(item["id"])
                else:
                    record = {"id": item["id"], "question": item["question"], **answer}
                    report.answered += 1
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            if item is not None:
                bar.advance()
    return report


def _drop_torn_tail(out_path: Path) -> None:
    """Cut a last line left without its newline by a killed run, so appends start on a fresh line."""
    if not out_path.exists():
        return
    data = out_path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(out_path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
