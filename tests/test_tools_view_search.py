"""Viewing with line numbers, folder listings, and regex search with path filters."""

from __future__ import annotations

import pytest
from tools_helpers import write_repo

from l2m_core.errors import L2MError
from tools.edits import EditSet
from tools.search import search_text
from tools.view import clip, view_file
from tools.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    return Workspace(write_repo(tmp_path / "repo", {
        "a.py": "".join(f"line {n}\n" for n in range(1, 21)),
        "src/pkg/b.py": "def Find_me():\n    return 'find_me'\n",
        "docs/notes.md": "find_me in prose\n",
        "empty.txt": "",
    }))


def test_view_numbers_the_requested_lines(ws):
    assert view_file(ws, "a.py", 3, 4) == "     3\tline 3\n     4\tline 4"
    assert view_file(ws, "a.py", 19).splitlines() == ["    19\tline 19", "    20\tline 20"]
    assert view_file(ws, "empty.txt") == ""


@pytest.mark.parametrize("start, end", [(0, 2), (5, 3), (21, None), (1, 21)])
def test_view_range_outside_the_file_is_refused(ws, start, end):
    with pytest.raises(L2MError, match="outside a.py, which has lines 1-20"):
        view_file(ws, "a.py", start, end)


def test_view_refuses_escapes_and_missing_files(ws):
    with pytest.raises(L2MError, match="'..' is not allowed"):
        view_file(ws, "../x.py")
    with pytest.raises(L2MError, match="does not exist"):
        view_file(ws, "nope.py")


def test_view_shows_staged_edits_when_given_them(ws):
    edits = EditSet(ws)
    edits.str_replace("a.py", "line 2\n", "line two\n")
    assert view_file(ws, "a.py", 2, 2, source=edits) == "     2\tline two"
    assert view_file(ws, "a.py", 2, 2) == "     2\tline 2"


def test_view_of_a_folder_lists_two_levels(ws):
    assert view_file(ws, ".").splitlines() == ["a.py", "docs/notes.md", "empty.txt", "src/pkg/"]
    assert view_file(ws, "src") == "src/pkg/b.py"


def test_clip_caps_long_output():
    assert clip("abc", 5) == "abc"
    clipped = clip("x" * 20_000)
    assert clipped.startswith("x" * 16_000) and "clipped at 16000 characters" in clipped
    assert len(clipped) < 16_200


def test_search_regex_with_path_filters(ws):
    hits = search_text(ws, r"find_me")
    assert [(m.path, m.line) for m in hits] == [("docs/notes.md", 1), ("src/pkg/b.py", 2)]
    assert [m.path for m in search_text(ws, "find_me", ignore_case=True, paths=["*.py"])] == ["src/pkg/b.py"] * 2
    assert [m.path for m in search_text(ws, "find_me", paths=["docs/"])] == ["docs/notes.md"]
    assert str(search_text(ws, r"line 1\d", max_matches=2)[1]) == "a.py:11: line 11"


def test_search_skips_binary_files_and_reports_bad_regex(ws):
    (ws.root / "blob.bin").write_bytes(b"find_me\x00\x01")
    assert "blob.bin" not in {m.path for m in search_text(ws, "find_me")}
    with pytest.raises(L2MError, match="bad regular expression"):
        search_text(ws, "(unclosed")
