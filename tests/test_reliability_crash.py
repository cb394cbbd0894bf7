"""Crash safety: `l2m ingest` killed with SIGKILL at random moments leaves only whole documents, and a rerun
finishes the ingest into a store that verifies and answers exactly like an uninterrupted one.

The moments are drawn from the writing phase of a reference ingest; `bench/crash.py` does 20 kills and
reports, this test does a few.
"""

from __future__ import annotations

import random
import shutil

import pytest
import sqlalchemy as sa

from bench.crash import (
    STORE,
    block_map_problems,
    check_store,
    kill_and_resume,
    passed,
    random_moment,
    write_corpus,
    writing_phase_seconds,
)
from l2m_core.loading import load_model
from repos_index import schema
from repos_index.pipeline import Updater

KILLS = 3
FILES = 5


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, lm):
    """A corpus, and an uninterrupted ingest of it: the length of its writing phase and its answers."""
    scratch = tmp_path_factory.mktemp("crash")
    corpus = write_corpus(scratch / "pristine", files=FILES, chars=6000)
    root = scratch / "reference"
    shutil.copytree(corpus, root)
    window = writing_phase_seconds(root, tiny_model_dir)
    return corpus, root, window, check_store(root / STORE, lm)


def test_the_uninterrupted_ingest_is_consistent(reference):
    _, _, _, check = reference
    assert check.verify == [] and check.block_map == []
    assert len(check.answers) == 3 and all(a["citations"] for a in check.answers)


def test_kill_9_at_random_moments_then_rerun(reference, tmp_path, tiny_model_dir, lm):
    corpus, _, window, check = reference
    rng = random.Random(7)
    trials = [kill_and_resume(corpus, tmp_path, tiny_model_dir, lm, *random_moment(rng, FILES + 1, window),
                              check.answers, cli_verify=number == KILLS - 1)
              for number in range(KILLS)]
    for trial in trials:
        assert passed(trial), trial
    assert trials[-1]["cli_verify_ok"] is True
    interrupted = [t for t in trials if t["killed"] and t["documents_at_kill"] <= FILES]
    assert interrupted, f"no kill landed while memory was being written: {trials}"
    assert all(t["rerun_ingested"] for t in interrupted)


def test_block_map_check_finds_missing_and_duplicated_rows(reference):
    _, root, _, _ = reference
    engine = sa.create_engine(f"sqlite:///{root / STORE / 'memory.db'}")
    try:
        with engine.begin() as conn:
            file_id, block_id = conn.execute(sa.select(schema.blocks.c.file_id, schema.blocks.c.block_id)).first()
            conn.execute(schema.blocks.insert().values(file_id=file_id, block_id=block_id, line_start=1, line_end=1))
        assert any("mapped 2 times" in p for p in block_map_problems(engine))
        with engine.begin() as conn:
            conn.execute(schema.blocks.delete().where(schema.blocks.c.block_id == block_id))
        problems = block_map_problems(engine)
        assert any("disagree" in p for p in problems) and any("unmapped block" in p for p in problems)
    finally:
        engine.dispose()


def test_a_crash_between_memory_and_its_block_map_keeps_the_blocks(tmp_path, lm, monkeypatch):
    """The one window no transaction covers: memory committed a document, the index had not mapped it yet.
    The rerun maps the blocks memory holds instead of writing them again, so their ids (which order every
    read set) and so the answers are those of an uninterrupted ingest."""
    from agent import Agent

    root = write_corpus(tmp_path / "corpus", files=2, chars=600)
    with Agent.open(root, model=lm) as agent:
        with monkeypatch.context() as patch:
            patch.setattr(Updater, "_map_blocks", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
            with pytest.raises(KeyboardInterrupt):
                agent.ingest()
        [crashed] = agent.memory.live_sources()
        held = agent.memory.blocks_for(crashed)
        report = agent.ingest()
        assert crashed in report.ingested and report.blocks_retired == 0
        assert agent.memory.blocks_for(crashed) == held
        assert block_map_problems(agent.memory.files.engine) == []
