"""Shared fixtures: a private L2M_HOME per test session, tiny models, the shared data folder."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
# The suite's expectations (exact reads, greedy tokens) hold in fp32. On a CPU where bf16 measures faster, `auto`
# would pick bf16 (l2m_core/cpu_dtype.py); the tests of `auto` itself unset this. Subprocesses inherit it.
os.environ.setdefault("L2M_DTYPE", "float32")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from l2m_core.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty L2M_HOME for tests that must not see the installed default model."""
    home = tmp_path / "l2m-home"
    monkeypatch.setenv("L2M_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def default_model():
    """The real default model; tests using it are marked `model`."""
    from l2m_core import provision
    from l2m_core.loading import load_model

    if not provision.is_installed():
        pytest.fail("the default model is not installed: run `l2m model pull` (scripts/setup.sh does)")
    return load_model(None, device="cpu")


@pytest.fixture
def pg_databases():
    """A factory of new, empty databases on the PostgreSQL test server (`L2M_TEST_POSTGRES_URL`; tests using
    it are marked `postgres` and skip without it): each call returns one's URL; all are dropped afterwards."""
    import sqlalchemy as sa

    server = os.environ.get("L2M_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("L2M_TEST_POSTGRES_URL is not set (run scripts/postgres.sh to start a server and get one)")
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    names: list[str] = []

    def create() -> str:
        names.append(f"l2m_{uuid.uuid4().hex[:12]}")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {names[-1]}")
        return sa.make_url(server).set(database=names[-1]).render_as_string(hide_password=False)

    try:
        yield create
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


def pytest_configure(config):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
