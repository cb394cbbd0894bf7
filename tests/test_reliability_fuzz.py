"""Hostile and broken input, fuzzed: the chunkers and the index under `hypothesis` (random bytes, deep
nesting, huge lines, mixed encodings), JSONL batches with garbage lines, malformed stores and damaged
model weights. Each gives one clear error (or a reported skip), and nothing that was sound is lost.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from index_helpers import FakeMemory

from agent.batch import run_batch
from l2m_core.errors import L2MError
from l2m_core.loading import load_model
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings
from l2m_core.store import block_kv, blocks
from repos_index.chunking import LANGUAGES, analyze
from repos_index.index import CorpusIndex
from repos_index.pipeline import decode

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of every syntax the analysers know, plus the characters that break naive line and byte handling.
FRAGMENTS = [
    "def f(x):\n", "class A:\n", "    ", "{", "}", "(", ")", "[", "]", "\n", "\r\n", "\t", "/*", "*/", '"', "'", "`",
    "function g() {", "fn h() {", "namespace n {", "package p\n", "import os\n", "#include <x>\n", "@decorator\n",
    "# Heading\n", "```\n", "Article 5\n", "Chapter I\n", "§ 3. ", "(a) ", "1. ", "see Article 3(1) of Directive 1/2",
    "é", "日本", "\x00", "\ufeff", "\ufffd", "\u2028", "\x85",
]
texts = st.one_of(
    st.binary(max_size=3000).map(lambda data: decode(data)[0]),
    st.lists(st.sampled_from(FRAGMENTS), max_size=400).map("".join),
    st.text(max_size=1500),
)


def check_analysis(text: str, language: str) -> None:
    """The invariants every analyser keeps: spans inside the text, ordinals in order, parents that exist,
    and every line holding text inside some chunk (nothing is dropped)."""
    analysis = analyze(text, language)
    size, lines = len(text.encode("utf-8")), text.count("\n") + 1
    assert [c.ordinal for c in analysis.chunks] == list(range(len(analysis.chunks)))
    covered: set[int] = set()
    for chunk in analysis.chunks:
        assert 0 <= chunk.byte_start <= chunk.byte_end <= size, chunk
        assert 1 <= chunk.line_start <= chunk.line_end <= lines, chunk
        assert chunk.parent is None or 0 <= chunk.parent < len(analysis.chunks), chunk
        covered.update(range(chunk.line_start, chunk.line_end + 1))
    dropped = [n for n, line in enumerate(text.split("\n"), start=1) if line.strip() and n not in covered]
    assert not dropped, f"{language}: lines {dropped[:5]} are in no chunk"


@FUZZ
@given(texts, st.sampled_from(sorted(LANGUAGES)))
def test_chunkers_keep_their_invariants_on_any_text(text, language):
    check_analysis(text, language)


def nested(language: str, depth: int) -> str:
    opener, closer = {
        "python": ("", ""), "cpp": ("namespace a {\n", "}\n"), "java": ("class A {\n", "}\n"),
        "rust": ("mod a {\n", "}\n"), "javascript": ("function f() {\n", "}\n"), "c": ("{\n", "}\n"),
        "go": ("func f() {\n", "}\n"), "typescript": ("namespace a {\n", "}\n"), "tsx": ("<a>\n", "</a>\n"),
        "markdown": ("> - ", "\n"), "legal": ("Article 1\n1. (a) ", "\n"), "text": ("(", ")"),
    }[language]
    if language == "python":
        return "".join("    " * i + f"class C{i}:\n" for i in range(depth)) + "    " * depth + "pass\n"
    return opener * depth + "x = 1;\n" + closer * depth


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_deep_nesting_and_huge_lines(language):
    check_analysis(nested(language, 500), language)
    check_analysis("x" * 300_000 + "\n" + "(" * 5_000 + "\n", language)


@pytest.mark.parametrize("language, text", [
    ("python", "x = " + "[\n" * 5_000 + "1\n" + "]\n" * 5_000),
    ("javascript", nested("javascript", 5_000)),
    ("typescript", nested("typescript", 5_000)),
], ids=["python-brackets", "javascript-functions", "typescript-namespaces"])
def test_code_nested_5000_deep_is_cut_into_line_windows(language, text):
    check_analysis(text, language)
    chunks = analyze(text, language).chunks
    assert len(chunks) > 1 and {c.kind for c in chunks} == {"lines"}


ENCODINGS = ["utf-8", "latin-1", "utf-16-le", "cp1252", "shift_jis"]
segments = st.tuples(st.text(max_size=200), st.sampled_from(ENCODINGS)).map(
    lambda pair: pair[0].encode(pair[1], errors="replace"))
files = st.dictionaries(
    st.tuples(st.text("abcdefghij_é日 -", min_size=1, max_size=8),
              st.sampled_from([".py", ".md", ".txt", ".c", ".rs", ""])),
    st.one_of(st.lists(segments, max_size=5).map(b"".join), st.binary(max_size=500)),
    max_size=6,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files)
def test_the_index_accounts_for_every_file_and_agrees_with_memory(contents):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "corpus"
        root.mkdir()
        written = set()
        for (stem, suffix), data in contents.items():
            name = stem.strip() + suffix
            if name.strip(". ") and name.lower() not in {w.lower() for w in written}:
                (root / name).write_bytes(data)
                written.add(name)
        index = CorpusIndex(Path(scratch) / "index.db", root)
        memory = FakeMemory()
        report = index.update(memory, progress=False)
        skipped = {path for paths in report.skipped.values() for path in paths}
        indexed = {entry.path for entry in _indexed(index)}
        assert indexed | skipped | set(report.errors) == written, report.summary()
        assert not indexed & skipped
        assert index.memory_disagreements(memory) == {}
        again = index.update(memory, progress=False)
        assert again.unchanged == len(indexed) and again.added == again.changed == again.ingested == []
        index.engine.dispose()


def _indexed(index: CorpusIndex):
    from repos_index import schema

    with index.engine.connect() as conn:
        return conn.execute(sa.select(schema.files.c.path)).all()


jsonl_items = st.one_of(
    st.builds(lambda q: json.dumps({"question": q}, ensure_ascii=False), st.text(min_size=1).filter(str.strip)),
    st.text().filter(lambda t: "\n" not in t and "\r" not in t),                   # garbage
    st.sampled_from(['{"question": ""}', '{"question": 5}', "[1, 2]", '"just a string"', "{", "null"]),
)


@FUZZ
@given(st.lists(jsonl_items, max_size=25))
def test_a_batch_with_garbage_lines_loses_nothing_and_resumes(lines):
    """One record per non-blank line, in order; good lines answered, bad lines reported; a rerun answers nothing
    again. Lines are split at newlines only, so a question may hold any character JSON allows unescaped."""
    with tempfile.TemporaryDirectory() as scratch:
        src, out = Path(scratch) / "in.jsonl", Path(scratch) / "out.jsonl"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        asked = []

        def ask(question: str, max_tokens: int) -> dict:
            asked.append(question)
            return {"answer": f"{question}\u2028!", "citations": []}

        numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
        if not numbered:  # a file of blank lines holds no questions: one error, nothing asked or written
            with pytest.raises(L2MError, match="holds no questions"):
                run_batch(ask, src, out)
            assert asked == [] and not out.exists()
            return
        report = run_batch(ask, src, out)
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
        assert [r["id"] for r in records] == [f"line-{n}" for n, _ in numbered]
        good = [n for n, line in numbered if _question(line)]
        assert [r["id"] for r in records if "answer" in r] == [f"line-{n}" for n in good]
        assert all(r["error"].startswith("malformed line") for r in records if "answer" not in r)
        assert asked == [_question(lines[n - 1]) for n in good] and report.answered == len(good)
        again = run_batch(ask, src, out)
        assert again.answered == 0 and again.skipped == len(good) and len(asked) == len(good)


def _question(line: str) -> str | None:
    try:
        item = json.loads(line)
    except ValueError:
        return None
    question = item.get("question") if isinstance(item, dict) else None
    return question if isinstance(question, str) and question.strip() else None


# -- malformed stores and damaged weights --------------------------------------------------------------

TEXT = "\n".join(f"Line {i}: the lamp number {i * 7} glows." for i in range(1, 40))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def sound_store(tmp_path_factory, tiny) -> Path:
    path = tmp_path_factory.mktemp("stores") / "sound"
    settings = MemorySettings(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, hot_budget_mb=4)
    with Memory.create(path, tiny, settings) as mem:
        mem.ingest_document(TEXT, "lamps.txt")
    return path


def _manifest(change):
    def damage(store: Path) -> None:
        manifest = json.loads((store / "manifest.json").read_text())
        (store / "manifest.json").write_text(json.dumps(change(manifest)))
    return damage


def _sql(statement: str):
    def damage(store: Path) -> None:
        engine = sa.create_engine(f"sqlite:///{store / 'memory.db'}")
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
        engine.dispose()
    return damage


def _empty_database(store: Path) -> None:
    for name in ("memory.db-wal", "memory.db-shm"):
        (store / name).unlink(missing_ok=True)
    (store / "memory.db").write_bytes(b"")


@pytest.mark.parametrize("damage, message", [
    (_manifest(lambda m: [m]), "not a JSON object"),
    (_manifest(lambda m: {**m, "settings": None}), "bad settings"),
    (_manifest(lambda m: {**m, "settings": {**m["settings"], "block_size": "sixteen"}}), "bad settings"),
    (_manifest(lambda m: {**m, "database": 5}), "database is not a URL"),
    (_manifest(lambda m: {**m, "format": 99}), "store format 99"),
    (_sql("DROP TABLE mem_block_kv"), "lacks the tables mem_block_kv"),
    (_empty_database, "database file of store .* is empty"),
], ids=["manifest-list", "settings-null", "settings-type", "database-type", "format", "dropped-table", "empty-db"])
def test_a_malformed_store_is_one_clear_error_and_left_as_it_was(sound_store, tmp_path, tiny, damage, message):
    store = tmp_path / "store"
    shutil.copytree(sound_store, store)
    damage(store)
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    with pytest.raises(L2MError, match=message):
        Memory.open(store, tiny)
    assert {p.name: p.read_bytes() for p in store.iterdir() if p.name in before} == before


@pytest.mark.parametrize("column, table", [("k", block_kv), ("repr", blocks)])
def test_a_damaged_block_is_reported_by_verify_and_by_ask(sound_store, tmp_path, tiny, column, table):
    store = tmp_path / "store"
    shutil.copytree(sound_store, store)
    with Memory.open(store, tiny) as mem:
        victim = min(mem.meta)
        id_column = table.c.block_id if table is block_kv else table.c.id
        with mem.files.engine.begin() as conn:
            conn.execute(table.update().where(id_column == victim).values({column: b"\x01\x02\x03"}))
    with pytest.raises(L2MError, match="damaged"):
        with Memory.open(store, tiny, hot_budget_mb=4) as mem:
            assert any("damaged" in p for p in mem.verify())
            mem.ask("lamp number 7", max_new_tokens=2, pins=[victim])


def test_the_cli_reports_a_malformed_store_in_one_line(sound_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(sound_store, store)
    _manifest(lambda m: {**m, "settings": "oops"})(store)
    done = subprocess.run([sys.executable, "-m", "cli", "memory", "verify", "--store", str(store)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "bad settings" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2], lambda data: b"", lambda data: b"\xff" * 64,
], ids=["truncated", "empty", "garbage"])
def test_damaged_safetensors_weights_are_one_clear_error(tiny_model_dir, tmp_path, damage):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(L2MError, match="cannot load model"):
        load_model(model, device="cpu")
