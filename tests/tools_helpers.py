"""Shared by the tools tests: small repositories written from a dict, and the fixture repository."""

from __future__ import annotations

from pathlib import Path

EDIT_REPO = Path(__file__).parent / "fixtures" / "edit_repo"


def write_repo(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> text) under `root` and return it."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative POSIX path -> bytes), ignoring caches and the undo journal."""
    skip = {"__pycache__", ".pytest_cache", ".l2m"}
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not skip & set(p.relative_to(root).parts)
    }
