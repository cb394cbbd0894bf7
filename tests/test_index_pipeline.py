"""The ingest pipeline against a recording memory: incremental, resumable, and tolerant of bad input."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest
from index_helpers import FIXTURES, FakeMemory, copy_fixture, make_unreadable
from sqlalchemy import create_engine, inspect, text

from l2m_core.errors import L2MError
from repos_index import pipeline, progress
from repos_index.index import CorpusIndex, ingest
from repos_index.pipeline import Updater

PYTHON_FILES = ["app.py", "shapes/__init__.py", "shapes/geometry.py"]


@pytest.fixture
def corpus(tmp_path) -> pathlib.Path:
    root = copy_fixture("python", tmp_path)
    shutil.copy(FIXTURES / "docs" / "statute.txt", root / "statute.txt")
    return root


@pytest.fixture
def index(tmp_path, corpus) -> CorpusIndex:
    return CorpusIndex(tmp_path / "index.db", corpus)


def edit(path: pathlib.Path, content: str) -> None:
    """Write and move the mtime forward, as an editor would (the filesystem clock may be coarse)."""
    path.write_text(content)
    stamp = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_first_update_ingests_every_file_in_dependency_order(index):
    memory = FakeMemory()
    report = index.update(memory, progress=False)
    calls = memory.take_calls()
    assert sorted(calls) == [("ingest", p) for p in sorted([*PYTHON_FILES, "statute.txt"])]
    order = [source for _, source in calls]
    assert order.index("shapes/geometry.py") < order.index("app.py")
    assert sorted(report.added) == sorted([*PYTHON_FILES, "statute.txt"])
    assert report.blocks_written == sum(len(blocks) for _, blocks in memory.docs.values())
    assert index.memory_disagreements(memory) == {}


def test_progress_is_silent_when_disabled_and_plain_lines_on_a_stderr_that_is_not_a_terminal(tmp_path, corpus,
                                                                                                 monkeypatch, capsys):
    """A script or CI log gets progress lines (live bars print nothing there until they stop), at most one
    per `LINE_EVERY_S`; here every file, since the interval is set to 0."""
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    CorpusIndex(tmp_path / "a.db", corpus).update(FakeMemory(), progress=False)
    assert capsys.readouterr() == ("", "")
    CorpusIndex(tmp_path / "b.db", corpus).update(FakeMemory(), progress=True)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    files = len(PYTHON_FILES) + 1
    assert [line.split(",")[0] for line in lines if line.startswith("indexing: ")] == [
        f"indexing: {n}/{files} files" for n in range(1, files + 1)]
    fed = [line for line in lines if line.startswith("ingesting: ")]
    assert len(fed) == files and f"({files}/{files} files)" in fed[-1] and " ~tok/s" in fed[-1]


def test_chunks_map_to_the_blocks_holding_their_lines(index):
    memory = FakeMemory(lines_per_block=4)
    index.update(memory, progress=False)
    [area] = index.find_symbol("Square.area")  # lines 23-24
    blocks = memory.docs["shapes/geometry.py"][1]
    assert area.blocks == [b.block_id for b in blocks if b.line_start <= 24 and b.line_end >= 23]
    [square] = index.find_symbol("Square")  # lines 19-24 span two blocks
    assert square.blocks == [b.block_id for b in blocks if b.line_start <= 24 and b.line_end >= 19]
    assert len(square.blocks) == 2
    assert index.blocks_for("shapes/geometry.py") == [b.block_id for b in blocks]
    assert index.blocks_for("shapes/geometry.py", 1, 4) == [blocks[0].block_id]


def test_an_unchanged_tree_reads_nothing_and_calls_no_model(index, corpus, monkeypatch):
    memory = FakeMemory()
    index.update(memory, progress=False)
    memory.take_calls()

    def no_reads(self):
        raise AssertionError(f"read {self}")

    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "read_bytes", no_reads)
        report = index.update(memory, progress=False)
    assert memory.take_calls() == []
    assert report.unchanged == 4 and not (report.added or report.changed or report.deleted or report.renamed)

    stamp = (corpus / "app.py").stat().st_mtime_ns + 5_000_000_000
    os.utime(corpus / "app.py", ns=(stamp, stamp))  # touched, same content
    report = index.update(memory, progress=False)
    assert memory.take_calls() == [] and report.changed == [] and report.unchanged == 4


def test_a_newer_analyser_analyses_unchanged_files_again_and_memory_keeps_their_blocks(index, monkeypatch):
    memory = FakeMemory()
    index.update(memory, progress=False)
    memory.take_calls()
    blocks = {path: [b.block_id for b in spans] for path, (_, spans) in memory.docs.items()}
    analysed: list[str] = []
    real = pipeline.analyze
    monkeypatch.setattr(pipeline, "analyze", lambda text, language: analysed.append(language) or real(text, language))
    monkeypatch.setattr(pipeline, "ANALYZER_VERSION", "next")
    report = index.update(memory, paths=[index.root], progress=False)  # `l2m ingest .` names the whole tree
    assert sorted(report.reanalyzed) == sorted([*PYTHON_FILES, "statute.txt"]) and len(analysed) == 4
    assert not (report.added or report.changed or report.ingested) and "analysed again" in report.summary()
    assert {path: [b.block_id for b in spans] for path, (_, spans) in memory.docs.items()} == blocks
    assert ("retire", "app.py") not in memory.take_calls()
    assert index.blocks_for("app.py") == blocks["app.py"] and index.memory_disagreements(memory) == {}
    assert index.update(memory, progress=False).reanalyzed == [] and len(analysed) == 4  # the version is kept


def test_an_empty_file_stored_as_no_blocks_is_not_ingested_again(index, corpus):
    (corpus / "empty.py").write_text("")
    memory = FakeMemory()
    assert index.update(memory, progress=False).warnings == {"no_text": ["empty.py"]}  # said, not passed over
    assert ("ingest", "empty.py") in memory.take_calls() and "empty.py" not in memory.live_sources()
    assert index.memory_disagreements(memory) == {}
    index.update(memory, progress=False)
    assert memory.take_calls() == []


def test_a_changed_file_alone_is_retired_and_reingested(index, corpus):
    memory = FakeMemory()
    index.update(memory, progress=False)
    memory.take_calls()
    edit(corpus / "app.py", "from shapes.geometry import circle_area\n\n\ndef report():\n    return circle_area(1)\n")
    report = index.update(memory, progress=False)
    assert memory.take_calls() == [("retire", "app.py"), ("ingest", "app.py")]
    assert report.changed == ["app.py"] and report.unchanged == 3
    assert [h.path for h in index.find_symbol("report")] == ["app.py"]
    assert index.find_symbol("main") == []
    assert index.blocks_for("app.py") == [b.block_id for b in memory.docs["app.py"][1]]
    assert index.memory_disagreements(memory) == {}


def test_added_deleted_and_renamed_files(index, corpus):
    memory = FakeMemory()
    index.update(memory, progress=False)
    memory.take_calls()

    (corpus / "shapes" / "solid.py").write_text("class Cube:\n    pass\n")
    assert index.update(memory, progress=False).added == ["shapes/solid.py"]
    assert memory.take_calls() == [("ingest", "shapes/solid.py")]

    (corpus / "statute.txt").unlink()
    report = index.update(memory, progress=False)
    assert report.deleted == ["statute.txt"] and memory.take_calls() == [("retire", "statute.txt")]
    assert index.find_section("§ 3") == []

    (corpus / "shapes" / "solid.py").rename(corpus / "shapes" / "solids.py")
    report = index.update(memory, progress=False)
    assert report.renamed == [("shapes/solid.py", "shapes/solids.py")] and report.chunks_written == 0
    assert memory.take_calls() == [("retire", "shapes/solid.py"), ("ingest", "shapes/solids.py")]
    assert [h.path for h in index.find_symbol("Cube")] == ["shapes/solids.py"]
    with pytest.raises(L2MError, match="not indexed"):
        index.outline("shapes/solid.py")
    assert index.memory_disagreements(memory) == {}


def test_index_only_updates_are_caught_up_when_memory_returns(index, corpus):
    memory = FakeMemory()
    index.update(memory, progress=False)
    memory.take_calls()
    (corpus / "statute.txt").unlink()
    (corpus / "shapes" / "__init__.py").rename(corpus / "shapes" / "package.py")
    edit(corpus / "app.py", "print('changed')\n")
    report = index.update(None, progress=False)
    assert report.ingested == [] and memory.take_calls() == []
    assert index.memory_disagreements(memory) == {
        "statute.txt": "not in index", "shapes/__init__.py": "not in index",
        "shapes/package.py": "not in memory", "app.py": "stale in memory",
    }
    index.update(memory, progress=False)
    assert sorted(memory.take_calls()) == sorted([
        ("retire", "statute.txt"), ("retire", "shapes/__init__.py"), ("ingest", "shapes/package.py"),
        ("retire", "app.py"), ("ingest", "app.py"),
    ])
    assert index.memory_disagreements(memory) == {}


def test_an_interrupted_ingest_resumes_where_it_stopped(index):
    memory = FakeMemory(interrupt_on={"app.py"})
    with pytest.raises(KeyboardInterrupt):
        index.update(memory, progress=False)
    first = {source for kind, source in memory.take_calls() if kind == "ingest"} - {"app.py"}
    assert first and "app.py" not in memory.docs
    memory.interrupt_on.clear()
    index.update(memory, progress=False)
    second = {source for kind, source in memory.take_calls() if kind == "ingest"}
    assert second == {*PYTHON_FILES, "statute.txt"} - first
    assert index.memory_disagreements(memory) == {}


def test_a_crash_after_memory_wrote_but_before_the_block_map_is_repaired(index, monkeypatch):
    memory = FakeMemory()
    with monkeypatch.context() as patch:
        patch.setattr(Updater, "_map_blocks", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            index.update(memory, progress=False)
    [(_, crashed)] = memory.take_calls()
    assert crashed in memory.docs and index.memory_disagreements(memory)[crashed] == "no block map"
    blocks = memory.docs[crashed][1]
    index.update(memory, progress=False)
    calls = memory.take_calls()
    assert ("retire", crashed) not in calls and calls.count(("ingest", crashed)) == 1
    assert memory.docs[crashed][1] == blocks  # the same blocks, mapped now
    assert index.memory_disagreements(memory) == {}


def test_a_document_the_engine_rejects_does_not_stop_the_others(index):
    memory = FakeMemory(fail_on={"statute.txt"})
    report = index.update(memory, progress=False)
    assert report.errors == {"statute.txt": "memory ingest failed: engine rejected statute.txt"}
    assert sorted(report.ingested) == sorted(PYTHON_FILES)
    memory.fail_on.clear()
    memory.take_calls()
    assert index.update(memory, progress=False).ingested == ["statute.txt"]


def test_bad_input_is_reported_and_the_rest_is_ingested(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    (root / "src").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "src" / "good.py").write_text("def good():\n    return 1\n")
    (root / "src" / "latin1.py").write_bytes(b"# caf\xe9\ndef legacy():\n    return 2\n")
    with open(root / "src" / "huge.log", "wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    os.symlink("loop", root / "src" / "loop")
    (root / "src" / "locked.py").write_text("x = 1\n")
    make_unreadable(root / "src" / "locked.py", monkeypatch)
    memory = FakeMemory()
    index = CorpusIndex(tmp_path / "index.db", root)
    report = index.update(memory, paths=["src", "does/not/exist", "empty"], progress=False)
    assert report.skipped == {
        "missing": ["does/not/exist"], "too_large": ["src/huge.log"], "unreadable": ["src/locked.py"],
        "symlink_loop": ["src/loop"],
    }
    assert report.warnings == {"nothing_to_index": ["empty"], "invalid_utf8": ["src/latin1.py"]}
    assert report.errors == {}
    assert sorted(report.ingested) == ["src/good.py", "src/latin1.py"]
    assert [h.path for h in index.find_symbol("legacy")] == ["src/latin1.py"]
    assert "skipped too_large (1): src/huge.log" in report.summary().splitlines()


def test_empty_and_missing_roots(tmp_path):
    (tmp_path / "empty").mkdir()
    memory = FakeMemory()
    report = CorpusIndex(tmp_path / "index.db", tmp_path / "empty").update(memory, progress=False)
    assert (report.files_seen, report.warnings, memory.calls) == (0, {"nothing_to_index": ["."]}, [])
    with pytest.raises(L2MError, match="not a directory"):
        CorpusIndex(tmp_path / "index.db", tmp_path / "absent")


def test_paths_outside_the_root_are_refused_by_lookups(index):
    index.update(progress=False)
    with pytest.raises(L2MError, match="outside the corpus root"):
        index.outline("/etc/passwd")
    with pytest.raises(L2MError, match="not indexed"):
        index.blocks_for("nothing.py")


def test_shares_the_memory_stores_engine(tmp_path, corpus):
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE blocks (id INTEGER PRIMARY KEY, payload BLOB)"))
        conn.execute(text("INSERT INTO blocks (payload) VALUES (x'00')"))
    index = CorpusIndex(engine, corpus)
    index.update(progress=False)
    tables = set(inspect(engine).get_table_names())
    assert "blocks" in tables and all(t.startswith("idx_") for t in tables - {"blocks"})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM blocks")).scalar() == 1
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_ingest_takes_a_subset_of_paths(tmp_path, corpus):
    memory = FakeMemory()
    report = ingest(["shapes"], tmp_path / "index.db", root=corpus, memory=memory, progress=False)
    assert sorted(report.ingested) == ["shapes/__init__.py", "shapes/geometry.py"]
    assert report.files_seen == 2
