"""Shared fixtures: a private L2M_HOME per test session, tiny models, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"


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


def pytest_configure(config):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
