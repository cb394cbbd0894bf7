"""The installed packages import only downwards (cli -> agent -> tools / repos_index -> l2m_core), and the
benchmark scripts in bench/ are not installed: a package named `bench` would collide with others."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEVEL = {"l2m_core": 0, "tools": 1, "repos_index": 1, "agent": 2, "cli": 3}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_packages_import_only_downwards():
    wrong = []
    for package, level in LEVEL.items():
        for path in sorted((REPO / package).rglob("*.py")):
            for name in _imports(path) - {package}:
                if name == "bench" or LEVEL.get(name, -1) >= level:
                    wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert wrong == []


def test_only_the_design_cards_packages_are_installed():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} == set(LEVEL)
