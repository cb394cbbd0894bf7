"""Staged edits: validation, one diff, all-or-nothing apply, and the persistent undo journal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tools_helpers import snapshot, write_repo

from l2m_core.errors import L2MError
from tools.edits import EditSet
from tools.journal import UndoJournal
from tools.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
MAIN = "def main():\n    value = 1\n    return value\n"


@pytest.fixture
def edits(tmp_path):
    root = write_repo(tmp_path / "repo", {"main.py": MAIN, "util.py": "A = 1\nB = 1\n"})
    return EditSet(Workspace(root))


def test_str_replace_is_staged_not_written(edits):
    line = edits.str_replace("main.py", "value = 1", "value = 2")
    assert line == 2
    assert edits.read_text("main.py") == MAIN.replace("value = 1", "value = 2")
    assert (edits.ws.root / "main.py").read_text() == MAIN
    assert edits.staged_files() == ["main.py"]


def test_str_replace_not_found_changes_nothing(edits):
    with pytest.raises(L2MError, match="not found in main.py"):
        edits.str_replace("main.py", "value = 3", "x")
    assert not edits and edits.staged_files() == []


def test_str_replace_found_twice_lists_the_lines(edits):
    with pytest.raises(L2MError, match=r"occurs 2 times in util.py \(lines 1, 2\)"):
        edits.str_replace("util.py", " = 1", " = 2")
    assert not edits


def test_str_replace_counts_overlapping_matches(edits):
    edits.create("aaa.txt", "aaa\n")
    with pytest.raises(L2MError, match="occurs 2 times"):
        edits.str_replace("aaa.txt", "aa", "b")


def test_str_replace_rejects_empty_old_text(edits):
    with pytest.raises(L2MError, match="empty"):
        edits.str_replace("main.py", "", "x")


def test_edit_refused_when_the_file_changed_since_it_was_viewed(edits):
    edits.read_text("main.py")
    (edits.ws.root / "main.py").write_text(MAIN + "# theirs\n")
    with pytest.raises(L2MError, match="main.py changed on disk since it was read; view it again"):
        edits.str_replace("main.py", "value = 1", "value = 2")
    assert not edits


def test_edits_compose_on_the_staged_text(edits):
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.str_replace("main.py", "value = 2", "value = 3")
    assert "value = 3" in edits.read_text("main.py")


@pytest.mark.parametrize("line, expected", [
    (0, "# top\n" + MAIN),
    (1, "def main():\n# top\n    value = 1\n    return value\n"),
    (3, MAIN + "# top\n"),
])
def test_insert_after_a_line(edits, line, expected):
    edits.insert("main.py", line, "# top")
    assert edits.read_text("main.py") == expected


def test_insert_outside_the_file_is_refused(edits):
    with pytest.raises(L2MError, match="line 4 is outside main.py, which has 3 lines"):
        edits.insert("main.py", 4, "x")


def test_insert_keeps_crlf_and_a_missing_final_newline(edits):
    (edits.ws.root / "w.txt").write_bytes(b"a\r\nb")
    edits.insert("w.txt", 2, "c")
    assert edits.read_text("w.txt") == "a\r\nb\r\nc\r\n"


def test_create_refuses_existing_or_staged_files(edits):
    with pytest.raises(L2MError, match="main.py already exists"):
        edits.create("main.py", "")
    edits.create("new/mod.py", "x = 1\n")
    with pytest.raises(L2MError, match="already exists"):
        edits.create("new/mod.py", "")


def test_edits_outside_the_repository_are_refused(edits, tmp_path):
    (tmp_path / "outside.py").write_text("value = 1\n")
    for path in ("../outside.py", str(tmp_path / "outside.py")):
        with pytest.raises(L2MError, match=r"'\.\.' is not allowed|outside the repository"):
            edits.str_replace(path, "value = 1", "value = 2")
        with pytest.raises(L2MError):
            edits.create(path, "boom\n")
    with pytest.raises(L2MError, match="not editable"):
        edits.create(".git/hooks/pre-commit", "#!/bin/sh\n")
    assert (tmp_path / "outside.py").read_text() == "value = 1\n"
    assert not edits


def test_diff_shows_every_staged_file(edits):
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.create("pkg/new.py", "NEW = True")
    diff = edits.diff()
    assert "--- a/main.py\n+++ b/main.py\n" in diff
    assert "-    value = 1\n+    value = 2\n" in diff
    assert "--- /dev/null\n+++ b/pkg/new.py\n" in diff
    assert "+NEW = True\n\\ No newline at end of file\n" in diff


def test_staged_undo_takes_back_the_last_step(edits):
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.str_replace("util.py", "A = 1", "A = 5")
    edits.create("n.py", "")
    assert edits.undo("main.py") == "main.py"
    assert edits.read_text("main.py") == MAIN
    assert edits.undo() == "n.py"
    assert not edits.exists("n.py")
    assert edits.staged_files() == ["util.py"]
    with pytest.raises(L2MError, match="no staged edit of main.py"):
        edits.undo("main.py")


def test_apply_writes_all_and_undo_restores_bytes(edits):
    before = snapshot(edits.ws.root)
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.create("pkg/sub/new.py", "x = 1\n")
    entry = edits.apply()
    assert (edits.ws.root / "main.py").read_text().count("value = 2") == 1
    assert (edits.ws.root / "pkg/sub/new.py").exists()
    assert not edits
    assert edits.journal.undo(edits.ws) == ["main.py", "pkg/sub/new.py"]
    assert snapshot(edits.ws.root) == before
    assert not (edits.ws.root / "pkg").exists()
    assert entry not in edits.journal.entries()
    with pytest.raises(L2MError, match="nothing to undo"):
        edits.journal.undo(edits.ws)


def test_the_journal_is_user_only(edits):
    edits.journal.directory.mkdir(parents=True, mode=0o755)
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.create("new.py", "x = 1\n")
    edits.apply()
    journal = edits.journal.directory
    for path in [journal, *journal.rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path


def test_apply_refuses_files_changed_on_disk_and_writes_nothing(edits):
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.str_replace("util.py", "A = 1", "A = 2")
    (edits.ws.root / "util.py").write_text("A = 1\nB = 1\nC = 1\n")
    with pytest.raises(L2MError, match="util.py changed on disk since it was read; nothing was written"):
        edits.apply()
    assert (edits.ws.root / "main.py").read_text() == MAIN
    assert edits.journal.entries() == []


def test_apply_refuses_a_new_file_that_appeared_meanwhile(edits):
    edits.create("late.py", "mine\n")
    (edits.ws.root / "late.py").write_text("theirs\n")
    with pytest.raises(L2MError, match="late.py was created on disk"):
        edits.apply()
    assert (edits.ws.root / "late.py").read_text() == "theirs\n"


def test_apply_with_nothing_staged_is_an_error(edits):
    with pytest.raises(L2MError, match="no staged edits"):
        edits.apply()


def test_undo_refuses_a_file_changed_since_applied(edits):
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.apply()
    (edits.ws.root / "main.py").write_text("hand edit\n")
    with pytest.raises(L2MError, match="main.py changed since the edit was applied"):
        edits.journal.undo(edits.ws)
    assert (edits.ws.root / "main.py").read_text() == "hand edit\n"


def test_undo_one_file_of_a_change_set(edits):
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.str_replace("util.py", "A = 1", "A = 2")
    edits.apply()
    edits.str_replace("util.py", "A = 2", "A = 3")
    edits.apply()
    assert edits.journal.undo(edits.ws, "main.py") == ["main.py"]
    assert (edits.ws.root / "main.py").read_text() == MAIN
    assert (edits.ws.root / "util.py").read_text().startswith("A = 3")
    edits.journal.undo(edits.ws, "util.py")
    edits.journal.undo(edits.ws, "util.py")
    assert (edits.ws.root / "util.py").read_text() == "A = 1\nB = 1\n"
    assert edits.journal.entries() == []


def test_undo_works_from_another_process(edits):
    before = snapshot(edits.ws.root)
    edits.str_replace("main.py", "value = 1", "value = 2")
    edits.create("extra.py", "E = 1\n")
    edits.apply()
    code = ("import sys; from tools.workspace import Workspace; from tools.journal import UndoJournal; "
            "ws = Workspace(sys.argv[1]); print(UndoJournal(ws.root / '.l2m' / 'undo').undo(ws))")
    done = subprocess.run([sys.executable, "-c", code, str(edits.ws.root)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert snapshot(edits.ws.root) == before


def test_journal_directory_can_be_given(tmp_path, edits):
    journal = UndoJournal(tmp_path / "elsewhere")
    other = EditSet(edits.ws, journal)
    other.str_replace("main.py", "value = 1", "value = 2")
    other.apply()
    assert len(journal.entries()) == 1
    assert not (edits.ws.root / ".l2m").exists()
