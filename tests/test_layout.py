"""The installed packages import only downwards (cli -> agent -> tools / repos_index -> l2m_core), and the
benchmark scripts in bench/ are not installed: a package named `bench` would collide with others; only
l2m_core/store.py reads or writes the memory tables."""

from __future__ import annotations

import ast
import re
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


MEMORY_TABLES = {"documents", "blocks", "block_kv", "metadata"}  # l2m_core/store.py's table objects
_TABLE_NAME = re.compile(r"\bmem_(documents|blocks|block_kv)\b")


def memory_table_uses(root: Path) -> list[str]:
    """Places in the packages under `root`, other than l2m_core/store.py, that name a memory table: by its SQL
    name, or through the table objects of `l2m_core.store` (imported, or as attributes of the module)."""
    found = []
    for package in LEVEL:
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root)
            if where == Path("l2m_core/store.py"):
                continue
            source = path.read_text(encoding="utf-8")
            found += [f"{where}:{source.count(chr(10), 0, m.start()) + 1} names {m.group()}"
                      for m in _TABLE_NAME.finditer(source)]
            tree = ast.parse(source)
            aliases = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "l2m_core.store":
                    found += [f"{where}:{node.lineno} imports {a.name}" for a in node.names if a.name in MEMORY_TABLES]
                elif isinstance(node, ast.ImportFrom) and node.module == "l2m_core":
                    aliases.update(a.asname or a.name for a in node.names if a.name == "store")
                elif isinstance(node, ast.Import):
                    aliases.update(a.asname for a in node.names if a.name == "l2m_core.store" and a.asname)
            found += [f"{where}:{node.lineno} uses {node.value.id}.{node.attr}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id in aliases and node.attr in MEMORY_TABLES]
    return found


def test_only_the_store_touches_the_memory_tables():
    """The cold tier's SQL lives in `l2m_core.store.ColdTier`; everything else goes through it."""
    assert memory_table_uses(REPO) == []


def test_the_table_check_finds_sql_and_table_objects(tmp_path):
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "raw.py").write_text('q = "SELECT text FROM mem_blocks"\n')
    (tmp_path / "agent" / "objects.py").write_text("from l2m_core.store import block_kv, is_store\n")
    (tmp_path / "agent" / "module.py").write_text("from l2m_core import store as s\nt = s.documents\n")
    assert memory_table_uses(tmp_path) == ["agent/module.py:2 uses s.documents", "agent/objects.py:1 imports block_kv",
                                           "agent/raw.py:1 names mem_blocks"]
