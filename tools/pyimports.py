"""Python module names from file paths, and a file's imports: what moving a definition needs to fix them."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import PurePosixPath

from tree_sitter import Node

from tools.pysyntax import PySource, walk


def module_name(path: str, files: Collection[str]) -> str:
    """The dotted module a file defines, counted from its source root: the nearest folder up without `__init__.py`."""
    pure = PurePosixPath(path)
    parts = pure.with_suffix("").parts
    folders = pure.parent.parts
    depth = 0
    while depth < len(folders) and "/".join((*folders[: len(folders) - depth], "__init__.py")) in files:
        depth += 1
    if parts[-1] == "__init__":
        return ".".join(parts[-1 - depth:-1])
    return ".".join(parts[-1 - depth:])


def is_package(path: str) -> bool:
    return PurePosixPath(path).name == "__init__.py"


def resolve(importer: str, package: bool, module_text: str) -> str:
    """The absolute module named by `module_text` (maybe relative, `..pkg.mod`) inside module `importer`."""
    level = len(module_text) - len(module_text.lstrip("."))
    if level == 0:
        return module_text
    base = importer.split(".") if package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    rest = module_text[level:]
    return ".".join([*base, rest] if rest else base)


def spell(importer: str, package: bool, target: str, relative: bool) -> str:
    """How module `importer` names module `target` in a `from ... import`: relative if asked and possible."""
    if not relative:
        return target
    base = importer.split(".") if package else importer.split(".")[:-1]
    parts = target.split(".")
    common = 0
    while common < min(len(base), len(parts)) and base[common] == parts[common]:
        common += 1
    if common == 0:
        return target
    return "." * (len(base) - common + 1) + ".".join(parts[common:])


@dataclass(frozen=True)
class Imported:
    """One name an import statement binds in a file.

    For `from m import n as b`: module m (absolute), name n, bound b. For `import a.b as c`: module a.b,
    name None, bound c, and `access` is how the code reaches the module (`c`, or `a.b` without alias).
    """

    statement: Node
    module: str
    name: str | None
    bound: str
    relative: bool
    access: str


def imports_of(src: PySource, importer: str, package: bool) -> list[Imported]:
    """The module-level imports of a file (those outside any function or class), in order."""
    found = []
    for stmt in walk(src.root):
        if stmt.type not in ("import_statement", "import_from_statement") or _in_scope(stmt):
            continue
        if stmt.type == "import_statement":
            for item in stmt.children_by_field_name("name"):
                module_node = item.child_by_field_name("name") if item.type == "aliased_import" else item
                module = src.node_text(module_node)
                alias = _alias(src, item)
                found.append(Imported(stmt, module, None, alias or module.split(".")[0], False, alias or module))
            continue
        module_text = src.node_text(stmt.child_by_field_name("module_name"))
        module = resolve(importer, package, module_text)
        for item in stmt.children_by_field_name("name"):
            name = src.node_text(item.child_by_field_name("name") if item.type == "aliased_import" else item)
            bound = _alias(src, item) or name
            found.append(Imported(stmt, module, name, bound, module_text.startswith("."), bound))
    return found


def render_from(module_text: str, names: list[tuple[str, str]]) -> str:
    """`from module_text import a, b as c` for (name, bound) pairs."""
    items = ", ".join(name if name == bound else f"{name} as {bound}" for name, bound in names)
    return f"from {module_text} import {items}"


def render(imported: Imported, module_text: str) -> str:
    """The statement that binds `imported` alone, naming its module as `module_text`."""
    if imported.name is None:
        alias = "" if imported.access == module_text else f" as {imported.bound}"
        return f"import {module_text}{alias}"
    return render_from(module_text, [(imported.name, imported.bound)])


def import_insertion_point(src: PySource) -> int:
    """Where a new import line goes: after the last module-level import, else after a docstring, else the top."""
    offset = 0
    for i, stmt in enumerate(src.root.named_children):
        if stmt.type in ("import_statement", "import_from_statement", "future_import_statement"):
            offset = src.line_end(src.end(stmt))
        elif i == 0 and stmt.type == "expression_statement" and stmt.named_children[0].type == "string":
            offset = src.line_end(src.end(stmt))
    return offset


def _alias(src: PySource, item: Node) -> str | None:
    return src.node_text(item.child_by_field_name("alias")) if item.type == "aliased_import" else None


def _in_scope(node: Node) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.type in ("function_definition", "class_definition"):
            return True
        parent = parent.parent
    return False
