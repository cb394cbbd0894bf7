"""A `SymbolIndex` over Python files built with tree-sitter: the tools' fallback and test index.

Name-based, like the corpus index: a reference is any identifier spelled like the name, except the
definitions' own names, keyword-argument names and module paths in import statements. Reading
through an `EditSet` shows staged edits, so the steps of a multi-step edit each see the last one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from tree_sitter import Node

from l2m_core.errors import L2MError
from tools.pysyntax import PySource, call_of, definition_statement, walk
from tools.symbols import Reference, Symbol, TextSource

_SCOPES = ("function_definition", "class_definition")


@dataclass
class _Facts:
    text: str
    symbols: list[Symbol] = field(default_factory=list)
    references: dict[str, list[Reference]] = field(default_factory=lambda: defaultdict(list))


class PythonIndex:
    """Definitions and references in the Python files of `source`; a file is re-parsed only when its text changes."""

    def __init__(self, source: TextSource):
        self.source = source
        self._facts: dict[str, _Facts] = {}

    def find_symbol(self, name: str) -> list[Symbol]:
        """Every definition of `name`: functions, methods, classes, module-level variables."""
        return [s for facts in self._all() for s in facts.symbols if s.name == name]

    def find_references(self, name: str) -> list[Reference]:
        """Every use of `name` other than its definitions' names, in file and position order."""
        return [r for facts in self._all() for r in facts.references.get(name, ())]

    def outline(self, path: str) -> list[Symbol]:
        """The definitions in one Python file, in order."""
        if not path.endswith((".py", ".pyi")):
            raise L2MError(f"{path}: the outline covers Python files only")
        return list(self._file(path).symbols)

    def _all(self) -> list[_Facts]:
        facts = []
        for path in self.source.list_files():
            if path.endswith((".py", ".pyi")):
                try:
                    facts.append(self._file(path))
                except L2MError:  # binary or undecodable: not indexable, not an error for a lookup
                    continue
        return facts

    def _file(self, path: str) -> _Facts:
        text = self.source.read_text(path)
        cached = self._facts.get(path)
        if cached is None or cached.text != text:
            cached = self._facts[path] = _extract(PySource(path, text))
        return cached


def _extract(src: PySource) -> _Facts:
    facts = _Facts(src.text)
    definition_names = set()
    for node in walk(src.root):
        name = _defined_name(node)
        if name is not None:
            definition_names.add(name.id)
            facts.symbols.append(_symbol(src, node, name))
    for node in walk(src.root):
        if node.type == "identifier" and node.id not in definition_names:
            context = _reference_context(node)
            if context is not None:
                facts.references[src.node_text(node)].append(Reference(src.node_text(node), src.span(node), context))
    return facts


def _defined_name(node: Node) -> Node | None:
    """The name node when `node` defines a symbol: a function, a class, or a module-level `NAME = ...`."""
    if node.type in _SCOPES:
        return node.child_by_field_name("name")
    if node.type == "assignment" and node.parent.type == "expression_statement" and node.parent.parent.type == "module":
        left = node.child_by_field_name("left")
        return left if left is not None and left.type == "identifier" else None
    return None


def _symbol(src: PySource, node: Node, name: Node) -> Symbol:
    scope = node.parent
    while scope is not None and scope.type not in _SCOPES:
        scope = scope.parent
    if node.type == "assignment":
        kind = "variable"
    elif node.type == "class_definition":
        kind = "class"
    else:
        kind = "method" if scope is not None and scope.type == "class_definition" else "function"
    parent = None if scope is None else src.node_text(scope.child_by_field_name("name"))
    return Symbol(src.node_text(name), kind, src.span(name), src.span(definition_statement(name)), parent)


def _reference_context(node: Node) -> str | None:
    """How an identifier uses its name, or None when it does not refer to a symbol (a keyword or module path)."""
    parent = node.parent
    if parent.type == "keyword_argument" and parent.child_by_field_name("name") == node:
        return None
    ancestor = parent
    while ancestor is not None and ancestor.type not in ("import_statement", "import_from_statement"):
        ancestor = ancestor.parent
    if ancestor is not None:
        if ancestor.type == "import_statement":
            return "import" if parent.type == "aliased_import" else None
        module = ancestor.child_by_field_name("module_name")
        return None if module.start_byte <= node.start_byte < module.end_byte else "import"
    if call_of(node) is not None:
        return "call"
    return "attribute" if parent.type == "attribute" and parent.child_by_field_name("attribute") == node else "name"
