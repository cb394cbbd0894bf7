"""Workspace confinement (no `..`, no outside absolute paths, no symlink escapes) and read tracking."""

from __future__ import annotations

import os

import pytest
from tools_helpers import write_repo

from l2m_core.errors import L2MError
from tools.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    root = write_repo(tmp_path / "repo", {"a.py": "x = 1\n", "pkg/b.py": "y = 2\n"})
    (tmp_path / "secret.txt").write_text("outside\n")
    return Workspace(root)


def test_relative_and_inside_absolute_paths_resolve(ws):
    assert ws.resolve("pkg/b.py") == ws.root / "pkg" / "b.py"
    assert ws.relative(ws.root / "pkg" / "b.py") == "pkg/b.py"
    assert ws.relative(".") == "."


@pytest.mark.parametrize("path, message", [
    ("../secret.txt", "'..' is not allowed"),
    ("pkg/../a.py", "'..' is not allowed"),
    ("", "empty path"),
])
def test_bad_relative_paths_are_refused(ws, path, message):
    with pytest.raises(L2MError, match=message):
        ws.resolve(path)


def test_absolute_path_outside_is_refused(ws, tmp_path):
    with pytest.raises(L2MError, match="outside the repository"):
        ws.read_text(str(tmp_path / "secret.txt"))
    with pytest.raises(L2MError, match="outside the repository"):
        ws.resolve("/etc/passwd")


def test_symlinks_pointing_outside_are_refused(ws, tmp_path):
    os.symlink(tmp_path / "secret.txt", ws.root / "link.txt")
    os.symlink(tmp_path, ws.root / "linkdir")
    for path in ("link.txt", "linkdir/secret.txt"):
        with pytest.raises(L2MError, match="outside the repository"):
            ws.read_text(path)
    assert "link.txt" not in ws.list_files()


def test_symlink_inside_the_root_is_followed(ws):
    os.symlink(ws.root / "a.py", ws.root / "alias.py")
    assert ws.read_text("alias.py") == "x = 1\n"
    assert ws.relative("alias.py") == "a.py"


@pytest.mark.parametrize("path", [".git/hooks/pre-commit", ".l2m/undo/x", "."])
def test_vcs_store_and_root_are_not_writable(ws, path):
    (ws.root / ".git" / "hooks").mkdir(parents=True)
    with pytest.raises(L2MError):
        ws.resolve_writable(path)


def test_missing_binary_and_directory_reads_fail_clearly(ws):
    (ws.root / "blob.bin").write_bytes(b"\x00\x01\x02")
    (ws.root / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(L2MError, match="does not exist"):
        ws.read_text("nope.py")
    with pytest.raises(L2MError, match="binary"):
        ws.read_text("blob.bin")
    with pytest.raises(L2MError, match="not UTF-8"):
        ws.read_text("latin.txt")
    with pytest.raises(L2MError, match="not a file"):
        ws.read_text("pkg")


def test_huge_files_are_left_alone(ws, monkeypatch):
    monkeypatch.setattr("tools.workspace.MAX_FILE_BYTES", 10)
    (ws.root / "big.txt").write_text("x" * 11)
    with pytest.raises(L2MError, match="larger than 10 bytes"):
        ws.read_text("big.txt")


def test_text_is_read_exactly_as_stored(ws):
    (ws.root / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    assert ws.read_text("crlf.txt") == "one\r\ntwo\r\n"


def test_edit_refused_when_file_changed_since_read(ws):
    ws.read_text("a.py")
    (ws.root / "a.py").write_text("x = 2\n")
    with pytest.raises(L2MError, match="changed on disk since it was read"):
        ws.read_for_edit("a.py")
    assert ws.read_text("a.py") == "x = 2\n"  # viewing again makes the new content the one seen
    assert ws.read_for_edit("a.py") == "x = 2\n"


def test_list_files_skips_gitignored_and_vcs_folders(ws):
    write_repo(ws.root, {".gitignore": "build/\n*.log\n", "build/out.py": "", "run.log": "", ".git/config": "",
                         "pkg/__pycache__/b.pyc": ""})
    assert ws.list_files() == [".gitignore", "a.py", "pkg/b.py"]


def test_root_must_be_a_directory(tmp_path):
    with pytest.raises(L2MError, match="not a directory"):
        Workspace(tmp_path / "missing")
