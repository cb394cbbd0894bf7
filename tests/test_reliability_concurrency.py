"""Concurrent sessions: two `l2m batch` processes answer while a third `l2m ingest`s into the same store.

No "database is locked" (or any error) may reach a user, the askers must see the new files once they are
in and agree on the answers once the ingest is over, and the store must hold every block exactly once.
Nothing here depends on how fast the sessions run (how many answers fall while the ingest writes is the
machine's load, measured by `bench/concurrency.py`, which runs more rounds).
"""

from __future__ import annotations

from contextlib import contextmanager

from bench.concurrency import (
    answers_by_question,
    block_count_problems,
    round_problems,
    session_round,
    setup,
    summarise,
)
from bench.crash import STORE, check_store
from l2m_core.loading import load_model


def test_two_askers_and_an_ingest_share_one_store(tmp_path, tiny_model_dir):
    lm = load_model(tiny_model_dir, device="cpu")
    root = setup(tmp_path, lm)
    result = session_round(root, tiny_model_dir, first_new=10, new_files=2)
    assert round_problems(result) == [], result
    check = check_store(root / STORE, lm, questions=[])
    assert check.verify == [] and check.block_map == []
    assert block_count_problems(root / STORE, lm.config.num_hidden_layers) == []


def test_askers_disagreeing_after_the_ingest_is_a_problem():
    """Once the ingest is over the store has one state: two replies to one question mean a stale or torn read."""
    def record(answer: str, source: str) -> dict:
        return {"question": "Who keeps vault 10?", "answer": answer,
                "citations": [{"source": source, "lines": [1, 3], "weight": 0.5}]}

    asker = {"status": 130, "stderr": "interrupted", "records": 2, "answered": 2, "errors": [], "cites_new_files": 1}
    result = {"ingest": {"status": 0, "stderr": "", "ingested": ["new_10.txt"]}, "new_files": ["new_10.txt"],
              "changed_files": [], "askers": [asker, asker]}
    other = {"question": "Who keeps vault 0?", "answer": "Ann", "citations": []}
    same = answers_by_question([record("Bo", "new_10.txt"), record("Bo", "new_10.txt"), other])
    assert round_problems({**result, "answers_after_ingest": same}) == []
    stale = answers_by_question([record("Bo", "new_10.txt"), record("Bo", "part_00.txt"), other])
    assert round_problems({**result, "answers_after_ingest": stale}) == [
        "'Who keeps vault 10?' got 2 different answers after the ingest: "
        "[['Bo', [['new_10.txt', 1, 3]]], ['Bo', [['part_00.txt', 1, 3]]]]"]


def test_an_askers_progress_lines_are_not_what_it_said():
    """How many progress lines a batch writes (one each 30 s) is the machine's load; an error line is not one."""
    progress = "answering: 112/20,000 questions, 3.7 questions/s, about 89 min left\n"
    assert summarise([], 130, progress * 2 + "interrupted\n", [])["stderr"] == "interrupted"
    said = summarise([], 1, progress + "error: the store is locked\n", [])["stderr"]
    assert said == "error: the store is locked"


LAMPS = "\n".join(f"Line {i}: lamp {i * 7} glows for {i} hours." for i in range(1, 40))


@contextmanager
def writer_and_reader(tmp_path, tiny_model_dir):
    """A store holding lamps.txt, a writer and a reader on it, and `replace()`: the writer replaces the document
    (as `l2m ingest` of a changed file does) the first time it is called, so the reader's retry must succeed."""
    from l2m_core.memory import Memory
    from l2m_core.settings import MemorySettings

    lm = load_model(tiny_model_dir, device="cpu")
    settings = MemorySettings(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, hot_budget_mb=4)
    with Memory.create(tmp_path / "s", lm, settings) as writer:
        writer.ingest_document(LAMPS, "lamps.txt")
        replaced: list = []

        def replace() -> None:
            if not replaced:
                replaced.append(writer.ingest_document(LAMPS + "\nLine 40: lamp 280 was changed.", "lamps.txt"))

        with Memory.open(tmp_path / "s", lm) as reader:
            yield writer, reader, replace
        assert replaced


def test_a_question_in_flight_when_another_process_retires_its_blocks(tmp_path, tiny_model_dir):
    """The window between a reader loading its index and reading the blocks: a writer replaces the document
    right then. The reader answers from the new blocks."""
    with writer_and_reader(tmp_path, tiny_model_dir) as (writer, reader, replace):
        chosen = reader._shared_read_set

        def read_set_then_writer_replaces(hits, pins):
            ids = chosen(hits, pins)
            replace()
            return ids

        reader._shared_read_set = read_set_then_writer_replaces
        answer = reader.ask("lamp 70 glows", max_new_tokens=2)
        assert set(answer.lexical) <= set(writer.blocks_for("lamps.txt"))


def test_a_question_whose_read_text_is_retired_before_its_answer_is_formed(tmp_path, tiny_model_dir):
    """The window after decoding, when the answer forms read the cited runs' text ("How long ...?" reads it for
    the sentence stating a duration): a writer replaces the document right then. The reader asks again."""
    with writer_and_reader(tmp_path, tiny_model_dir) as (writer, reader, replace):
        run_text = reader._run_text

        def writer_replaces_then_read(citation):
            replace()
            return run_text(citation)

        reader._run_text = writer_replaces_then_read
        answer = reader.ask("How long does lamp 70 glow?", max_new_tokens=2)
        assert set(answer.lexical) <= set(writer.blocks_for("lamps.txt"))


def test_a_writer_waits_for_a_held_lock_instead_of_failing(tmp_path, tiny_model_dir):
    import sqlite3
    import threading

    from l2m_core.memory import Memory
    from l2m_core.settings import MemorySettings

    lm = load_model(tiny_model_dir, device="cpu")
    settings = MemorySettings(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, hot_budget_mb=4)
    with Memory.create(tmp_path / "s", lm, settings) as memory:
        holder = sqlite3.connect(tmp_path / "s" / "memory.db", check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another process writing
        release = threading.Timer(1.0, holder.rollback)
        release.start()
        memory.ingest_document("The lock was held for a second.\n" * 4, "waited.txt")
        release.join()
        holder.close()
        assert set(memory.live_sources()) == {"waited.txt"} and memory.verify() == []


def test_only_lock_errors_count_as_transient(tmp_path):
    import sqlite3

    import sqlalchemy as sa

    from l2m_core.store import is_transient

    db = tmp_path / "x.db"
    holder = sqlite3.connect(db)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0})
    errors = []

    def failing(statement: str) -> None:
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
        except sa.exc.DBAPIError as exc:
            errors.append(exc)

    failing("INSERT INTO t VALUES (1)")  # locked by the holder
    holder.rollback()
    failing("SELECT * FROM no_such_table")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE UNIQUE INDEX one ON t (x)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    failing("INSERT INTO t VALUES (1)")  # a duplicate
    engine.dispose()
    holder.close()
    assert [is_transient(e) for e in errors] == [True, False, False]


def test_the_index_sharing_the_store_database_waits_as_long_for_a_lock(tmp_path, tiny_model_dir):
    """One database, one lock wait: the index's engine hooks must not shorten the store's busy timeout."""
    from l2m_core.memory import Memory
    from l2m_core.store import BUSY_TIMEOUT_MS
    from repos_index.index import CorpusIndex

    lm = load_model(tiny_model_dir, device="cpu")
    with Memory.create(tmp_path / "s", lm) as memory:
        CorpusIndex(memory.files.engine, tmp_path)
        memory.files.engine.dispose()  # the next connection is a new one, set up by every hook
        with memory.files.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_MS
