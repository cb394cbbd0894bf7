"""The cold tier on a real PostgreSQL server, reached by its SQLAlchemy URL, and unchanged otherwise.

Tests marked `postgres` read the server's URL from `L2M_TEST_POSTGRES_URL` (`scripts/postgres.sh` starts
a local server and prints one) and skip without it. Each test gets a fresh database on that server.
The SQLite store's own tests are in test_memory.py; here the same behaviours run against PostgreSQL,
and a PostgreSQL store must answer exactly like a SQLite one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sqlalchemy as sa

from l2m_core import store as store_module
from l2m_core.errors import L2MError
from l2m_core.loading import LoadedModel, load_model
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings
from l2m_core.store import DATABASE_URL_ENV, StoreFiles, block_kv

TEXT = "\n".join(f"Line {i}: the {['red', 'green', 'blue'][i % 3]} lamp number {i * 7} glows." for i in range(1, 40))
VAULT = "The zebra quartz vault opens with code 4417.\n" * 3
QUESTION = "Which code opens the zebra quartz vault?"


def small() -> MemorySettings:
    return MemorySettings(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, hot_budget_mb=4)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture
def pg_url(pg_databases, monkeypatch):
    """The URL of a new, empty database on the test server, also in $L2M_DATABASE_URL (where opening a store
    finds the password its manifest leaves out)."""
    url = pg_databases()
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    return url


def visible(answer) -> dict:
    return {k: v for k, v in answer.to_dict().items() if k != "timings"}


@pytest.mark.postgres
def test_ingest_ask_reopen_retire_verify(tiny, tmp_path, pg_url):
    store = tmp_path / "s"
    with Memory.create(store, tiny, small(), database_url=pg_url) as mem:
        mem.ingest_document(TEXT, "lamps.txt")
        mem.ingest_document(VAULT, "vault.txt")
        here = visible(mem.ask(QUESTION, max_new_tokens=6))
        assert set(mem.blocks_for("vault.txt")) & set(here["lexical_blocks"])
    assert sorted(p.name for p in store.iterdir()) == ["manifest.json"]  # the tables live on the server
    with Memory.open(store, tiny) as reopened:
        assert visible(reopened.ask(QUESTION, max_new_tokens=6)) == here
        assert reopened.verify() == []
        assert reopened.retire_document("lamps.txt") > 0
        assert set(reopened.live_sources()) == {"vault.txt"} and reopened.verify() == []
        with reopened.files.engine.begin() as conn:
            conn.execute(block_kv.delete().where(block_kv.c.block_id == min(reopened.meta), block_kv.c.layer == 0))
        assert any("layers" in p for p in reopened.verify())


@pytest.mark.postgres
def test_a_reader_sees_what_another_handle_writes(tiny, tmp_path, pg_url):
    writer = Memory.create(tmp_path / "s", tiny, small(), database_url=pg_url)
    writer.ingest_document(TEXT, "lamps.txt")
    reader = Memory.open(tmp_path / "s", tiny)
    writer.ingest_document(VAULT, "vault.txt")
    writer.retire_document("lamps.txt")
    answer = reader.ask("zebra quartz vault code", max_new_tokens=2)
    assert answer.lexical and set(answer.lexical) <= set(reader.blocks_for("vault.txt"))
    writer.close()
    reader.close()


@pytest.mark.postgres
def test_a_postgres_store_answers_exactly_like_a_sqlite_store(tiny, tmp_path, pg_url):
    answers = []
    for name, url in (("sqlite", None), ("postgres", pg_url)):
        with Memory.create(tmp_path / name, tiny, small(), database_url=url) as mem:
            mem.ingest_document(TEXT, "lamps.txt")
            mem.ingest_document(VAULT, "vault.txt")
            answers.append([visible(mem.ask(q, max_new_tokens=6)) for q in (QUESTION, "the blue lamp number 91")])
    assert answers[0] == answers[1]


@pytest.mark.postgres
def test_the_cli_runs_unchanged_on_a_postgres_store(tiny, tiny_model_dir, tmp_path, pg_url):
    """A store created with a URL: `l2m ingest` indexes and ingests into it, `l2m memory verify` checks it."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "lamps.txt").write_text(TEXT)
    (root / "vault.md").write_text("# Vault\n\n" + VAULT)
    Memory.create(root / ".l2m", tiny, small(), database_url=pg_url).close()

    def l2m(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", *args, "--json"], cwd=root, capture_output=True,
                              text=True, timeout=300)

    done = l2m("ingest")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["ingested"]) == ["lamps.txt", "vault.md"]
    verified = l2m("memory", "verify")
    assert verified.returncode == 0 and json.loads(verified.stdout) == {"ok": True, "problems": []}
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert {"idx_files", "mem_blocks"} <= set(sa.inspect(conn).get_table_names())
    engine.dispose()


def test_an_unreachable_server_is_one_clear_error(tiny, tmp_path):
    url = "postgresql+psycopg://l2m:s3cret@127.0.0.1:9/nothing"
    with pytest.raises(L2MError, match=r"cannot create .*127\.0\.0\.1:9/nothing|no database driver") as info:
        Memory.create(tmp_path / "s", tiny, small(), database_url=url)
    assert "s3cret" not in str(info.value)
    store = tmp_path / "moved"
    store.mkdir()
    manifest = {"format": store_module.FORMAT_VERSION, "database": url, "settings": small().to_dict()}
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(L2MError, match=r"cannot reach the database|no database driver") as info:
        StoreFiles.open(store)
    assert "s3cret" not in str(info.value)


def test_the_manifest_never_holds_the_password(tiny, tmp_path, monkeypatch):
    """The manifest records the URL without its password; opening takes the password from $L2M_DATABASE_URL
    when that names the same database, else leaves it to the driver. (A SQLite file stands in for the
    server: the engine factory is redirected, so no server is needed.)"""
    url, recorded = "postgresql+psycopg://l2m:s3cret@db.example:5432/team", "postgresql+psycopg://l2m@db.example:5432/team"
    asked = []

    def stand_in(given: str) -> sa.Engine:
        asked.append(given)
        return sa.create_engine(f"sqlite:///{tmp_path / 'stand-in.db'}")

    monkeypatch.setattr(store_module, "make_engine", stand_in)
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    Memory.create(tmp_path / "s", tiny, small(), database_url=url).close()
    manifest = (tmp_path / "s" / "manifest.json").read_text()
    assert "s3cret" not in manifest and json.loads(manifest)["database"] == recorded
    for env in (None, url, url.replace("/team", "/other")):
        if env:
            monkeypatch.setenv(DATABASE_URL_ENV, env)
        StoreFiles.open(tmp_path / "s").engine.dispose()
    assert asked == [url, recorded, url, recorded]


@pytest.mark.parametrize("url, message", [("not a url", "not a valid database URL"),
                                          ("nosuchdialect://x/y", "not a valid database URL|no database driver")])
def test_a_bad_database_url_is_one_clear_error(tiny, tmp_path, url, message):
    with pytest.raises(L2MError, match=message):
        Memory.create(tmp_path / "s", tiny, small(), database_url=url)
