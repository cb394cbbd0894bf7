"""The `l2m` command line end to end on a tiny model: ingest, ask, memory maintenance, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "python"


def l2m(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, input=stdin, capture_output=True, text=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(FIXTURE, root, dirs_exist_ok=True)
    done = l2m("ingest", "--model", str(tiny_model_dir), "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def test_ingest_writes_every_file_and_a_second_run_does_nothing(repo):
    again = json.loads(l2m("ingest", "--json", cwd=repo).stdout)
    assert again["unchanged"] == again["files_seen"] > 0 and again["ingested"] == []
    stats = json.loads(l2m("memory", "stats", "--json", cwd=repo).stdout)
    assert stats["documents"] == again["files_seen"] and stats["blocks"] > 0


def test_ask_cites_file_lines_from_a_subdirectory(repo):
    done = l2m("ask", "Where is class Square defined?", "--max-tokens", "4", "--json", cwd=repo / "shapes")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["citations"] and all(Path(repo, c["source"]).is_file() for c in answer["citations"])
    assert any(c["source"] == "shapes/geometry.py" for c in answer["citations"])


def test_changed_file_is_reingested_and_store_verifies(repo):
    target = repo / "app.py"
    target.write_text(target.read_text() + "\n# a trailing comment\n")
    report = json.loads(l2m("ingest", "--json", cwd=repo).stdout)
    assert report["ingested"] == ["app.py"] and report["blocks_retired"] > 0
    assert l2m("memory", "verify", cwd=repo).returncode == 0


def test_pin_names_lines_to_read(repo):
    done = l2m("ask", "anything", "--pin", "app.py:1-3", "--max-tokens", "2", "--json", cwd=repo)
    assert done.returncode == 0, done.stderr
    bad = l2m("ask", "anything", "--pin", "nope.py", cwd=repo)
    assert bad.returncode == 2 and "no memory blocks" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (("ask", "what?"), "no memory store"),
    (("memory", "stats"), "no memory store"),
])
def test_no_store_gives_one_line(tmp_path, args, message):
    done = l2m(*args, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_missing_path_is_reported_and_the_rest_ingested(tmp_path, tiny_model_dir):
    (tmp_path / "real.md").write_text("# Title\n\nSome words worth remembering.\n")
    done = l2m("ingest", "real.md", "missing.md", "--model", str(tiny_model_dir), "--json", cwd=tmp_path)
    assert done.returncode == 1 and "missing.md: no such file" in done.stderr and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["ingested"] == ["real.md"]


def test_ingest_of_only_missing_paths_makes_no_store(tmp_path, tiny_model_dir):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = l2m("ingest", str(tmp_path / "nope"), "--model", str(tiny_model_dir), cwd=elsewhere)
    assert done.returncode == 2 and "nope: no such file or directory" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob(".l2m"))


def test_ingest_of_a_folder_with_nothing_to_index_fails(tmp_path, tiny_model_dir):
    (tmp_path / "empty").mkdir()
    done = l2m("ingest", "--model", str(tiny_model_dir), cwd=tmp_path / "empty")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == f"error: {(tmp_path / 'empty').resolve()}: nothing to index there\n"
    assert list((tmp_path / "empty").iterdir()) == []  # the store it made for nothing is gone


@pytest.mark.parametrize("written", ["absolute", "relative"])
def test_ingest_of_an_empty_folder_from_elsewhere_names_it_and_leaves_no_store(tmp_path, tiny_model_dir, written):
    empty, elsewhere = tmp_path / "empty", tmp_path / "elsewhere"
    empty.mkdir()
    elsewhere.mkdir()
    given = str(empty) if written == "absolute" else "../empty"
    done = l2m("ingest", given, "--model", str(tiny_model_dir), cwd=elsewhere)
    assert done.returncode == 1 and done.stderr == f"error: {given}: nothing to index there\n"
    assert done.stdout == ""  # no report of a store that is not there
    assert not list(tmp_path.rglob(".l2m")) and list(empty.iterdir()) == []


def test_ingest_of_nothing_into_a_folder_given_as_store_keeps_what_was_there(tmp_path, tiny_model_dir):
    """`--store` naming a folder that exists but is no store: only what the ingest added goes again."""
    empty, folder = tmp_path / "empty", tmp_path / "folder"
    empty.mkdir()
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    done = l2m("ingest", str(empty), "--store", str(folder), "--model", str(tiny_model_dir), cwd=tmp_path)
    assert done.returncode == 1 and f"error: {empty}: nothing to index there" in done.stderr
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine\n"


def test_ingest_of_an_empty_folder_into_an_existing_store_keeps_the_store(tmp_path, tiny_model_dir):
    (tmp_path / "a.md").write_text("# Title\n\nSome words worth remembering.\n")
    (tmp_path / "sub").mkdir()
    assert l2m("ingest", "--model", str(tiny_model_dir), cwd=tmp_path).returncode == 0
    done = l2m("ingest", "sub", "--json", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr == "error: sub: nothing to index there\n"
    assert json.loads(done.stdout)["memory"]["documents"] == 1
    assert json.loads(l2m("memory", "stats", "--json", cwd=tmp_path).stdout)["documents"] == 1


@pytest.fixture
def empty_store(tmp_path, tiny_model_dir) -> Path:
    """A store whose only document was deleted and re-ingested away: it exists and holds no documents."""
    (tmp_path / "a.md").write_text("# Title\n\nSome words worth remembering.\n")
    assert l2m("ingest", "--model", str(tiny_model_dir), cwd=tmp_path).returncode == 0
    (tmp_path / "a.md").unlink()
    l2m("ingest", cwd=tmp_path)
    assert json.loads(l2m("memory", "stats", "--json", cwd=tmp_path).stdout)["documents"] == 0
    (tmp_path / "questions.jsonl").write_text('{"id": "q1", "question": "What words?", "max_tokens": 2}\n')
    return tmp_path


@pytest.mark.parametrize("args", [
    ("ask", "What words?", "--max-tokens", "2"),
    ("batch", "questions.jsonl", "--out", "answers.jsonl"),
    ("chat",),
], ids=["ask", "batch", "chat"])
def test_answering_from_a_store_with_no_documents_is_refused(empty_store, args):
    """An empty memory answers like the plain model, with no sources: the command line must not pass that off
    as an answer from the corpus."""
    done = l2m(*args, cwd=empty_store, stdin="What words?\n")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"error: the memory store {empty_store.resolve() / '.l2m'} holds no documents; "
                           "run `l2m ingest PATH` first\n")
    assert not (empty_store / "answers.jsonl").exists()


def test_ingest_puts_a_new_store_on_the_database_given(tmp_path, tiny_model_dir):
    """`--database-url`: the tables live in that database, the store directory holds only the manifest,
    and later commands find them there."""
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    shutil.copytree(FIXTURE, root)
    elsewhere.mkdir()
    url = f"sqlite:///{elsewhere / 'other.db'}"
    done = l2m("ingest", "--model", str(tiny_model_dir), "--database-url", url, "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["memory"]["blocks"] > 0
    assert [p.name for p in (root / ".l2m").iterdir()] == ["manifest.json"]
    assert json.loads((root / ".l2m" / "manifest.json").read_text())["database"] == url
    verified = l2m("memory", "verify", "--json", cwd=root)
    assert verified.returncode == 0 and json.loads(verified.stdout) == {"ok": True, "problems": []}


@pytest.mark.parametrize("url, message", [
    ("not a url", "not a valid database URL"),
    ("sqlite:////nonexistent-l2m-folder/other.db", "cannot create the store's tables"),
    ("postgresql+psycopg://l2m@127.0.0.1:9/nothing", "cannot create the store's tables|no database driver"),
    ("postgresql+psycopg://l2m:s3cret@127.0.0.1:9/nothing", "password in \\$L2M_DATABASE_URL or \\$PGPASSWORD"),
], ids=["malformed", "unreachable-sqlite", "unreachable-server", "password-in-argv"])
def test_a_bad_database_url_is_one_line(tmp_path, tiny_model_dir, url, message):
    done = l2m("ingest", "--model", str(tiny_model_dir), "--database-url", url, cwd=tmp_path)
    assert done.returncode == 2 and re.search(message, done.stderr), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "s3cret" not in done.stderr
    assert not (tmp_path / ".l2m" / "manifest.json").exists()


def test_store_of_another_model_is_refused(repo, tmp_path):
    from l2m_core.tiny import save_tiny_model

    other = save_tiny_model(tmp_path / "other", seed=3)
    done = l2m("ask", "hello", "--model", str(other), cwd=repo)
    assert done.returncode == 2 and "was built with model" in done.stderr


def test_clear_removes_the_store(tmp_path, tiny_model_dir):
    (tmp_path / "a.txt").write_text("alpha beta gamma\n")
    assert l2m("ingest", "--model", str(tiny_model_dir), cwd=tmp_path).returncode == 0
    assert l2m("memory", "clear", "--yes", cwd=tmp_path).returncode == 0
    assert not (tmp_path / ".l2m").exists()


def test_batch_answers_reports_garbage_and_resumes(repo):
    questions = repo / "questions.jsonl"
    questions.write_text('{"id": "q1", "question": "Where is Square?", "max_tokens": 2}\n'
                         "this is not json\n"
                         '{"question": "What does area return?", "max_tokens": 2}\n')
    first = l2m("batch", "questions.jsonl", cwd=repo)  # no --out: the answers go beside the questions
    out = repo / "questions.answers.jsonl"
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert first.stdout.strip() == f"2 answered, 0 already done, 1 failed: line-2; answers in {out.name}"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["q1", "line-2", "line-3"]
    assert "malformed" in records[1]["error"] and all("citations" in r for r in (records[0], records[2]))
    again = json.loads(l2m("batch", str(questions), "--out", str(out), "--json", cwd=repo).stdout)
    assert again == {"answered": 0, "skipped": 2, "failed": ["line-2"], "out": str(out)}
    onto_questions = l2m("batch", str(questions), "--out", str(questions), cwd=repo)
    assert onto_questions.returncode == 2 and onto_questions.stderr.count("\n") == 1
    assert "is the questions file" in onto_questions.stderr and questions.read_text().count("\n") == 3


def test_chat_reads_stdin_and_resumes_the_session(repo):
    def chat(*args: str, stdin: str):
        return subprocess.run([sys.executable, "-m", "cli", "chat", "--json", *args], cwd=repo, input=stdin,
                              capture_output=True, text=True)

    first = chat(stdin="What is Square?\n")
    assert first.returncode == 0, first.stderr
    turn = json.loads(first.stdout.splitlines()[0])
    assert turn["stop_reason"] in ("answered", "step_limit")
    resumed = json.loads(chat("--resume", stdin="And its area?\n").stdout.splitlines()[0])
    assert resumed["session"] == turn["session"]


def test_ask_with_a_learned_memory_adapter(repo, tiny_model_dir, tmp_path):
    from l2m_core.lm2 import attach_memory, save_adapter
    from l2m_core.loading import load_model

    lm = load_model(tiny_model_dir, device="cpu")
    save_adapter(attach_memory(lm.model, None, lm.tokenizer), tmp_path / "adapter")
    done = l2m("ask", "What is Square?", "--memory-adapter", str(tmp_path / "adapter"), "--max-tokens", "3",
               "--json", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["memory"] == "learned"


def test_ingest_of_a_folder_from_elsewhere_makes_it_the_new_store_root(tmp_path, tiny_model_dir):
    """Absolute paths from another directory: a new store's corpus root is the folder given, not the current
    directory (which left every file `outside_root` and the store empty)."""
    corpus, elsewhere, store = tmp_path / "corpus", tmp_path / "elsewhere", tmp_path / "store"
    shutil.copytree(FIXTURE, corpus)
    elsewhere.mkdir()
    done = l2m("ingest", str(corpus / "shapes"), "--store", str(store), "--model", str(tiny_model_dir), "--json",
               cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ingested"] and report["memory"]["blocks"] > 0 and not report["skipped"]
    assert json.loads((store / "manifest.json").read_text())["root"] == str((corpus / "shapes").resolve())
    answer = l2m("ask", "Where is class Square defined?", "--store", str(store), "--max-tokens", "2", "--json",
                 cwd=elsewhere)
    assert answer.returncode == 0, answer.stderr
    assert any(c["source"] == "geometry.py" for c in json.loads(answer.stdout)["citations"])


def test_ingest_of_files_from_elsewhere_roots_a_new_store_at_their_common_folder(tmp_path, tiny_model_dir):
    corpus = tmp_path / "corpus"
    shutil.copytree(FIXTURE, corpus)
    files = [str(corpus / "app.py"), str(corpus / "shapes" / "geometry.py")]
    done = l2m("ingest", *files, "--store", str(tmp_path / "store"), "--model", str(tiny_model_dir), "--json",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["ingested"]) == ["app.py", "shapes/geometry.py"]


def test_ingest_of_a_path_outside_an_existing_stores_root_is_an_error(repo, tmp_path):
    outside = tmp_path / "notes.md"
    outside.write_text("# Notes\n\nNot part of the repository.\n")
    before = json.loads(l2m("memory", "stats", "--json", cwd=repo).stdout)
    done = l2m("ingest", str(outside), "--store", str(repo / ".l2m"), cwd=tmp_path)
    assert done.returncode == 2 and "outside" in done.stderr and str(repo.resolve()) in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert json.loads(l2m("memory", "stats", "--json", cwd=repo).stdout) == before
    missing = l2m("ingest", str(tmp_path / "nope.md"), cwd=repo)  # missing and outside: said to be missing
    assert missing.returncode == 2 and missing.stderr == f"error: {tmp_path / 'nope.md'}: no such file or directory\n"
    assert json.loads(l2m("memory", "stats", "--json", cwd=repo).stdout) == before
