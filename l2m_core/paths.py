"""Where l2m keeps its per-user files (models, caches)."""

import os
from pathlib import Path


def l2m_home() -> Path:
    """`$L2M_HOME`, default `~/.cache/l2m`; created user-only on first use."""
    home = Path(os.environ.get("L2M_HOME") or Path.home() / ".cache" / "l2m").expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home
