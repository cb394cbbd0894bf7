"""A parsed Python file (tree-sitter) with conversions between its byte points and character positions.

Tree-sitter counts columns in UTF-8 bytes; tools and `Span`s count characters, so every position
leaving this module is in characters.
"""

from __future__ import annotations

from collections.abc import Iterator

import tree_sitter_python
from tree_sitter import Language, Node, Parser

from l2m_core.errors import L2MError
from tools.symbols import Span

_PARSER = Parser(Language(tree_sitter_python.language()))


class PySource:
    """One Python file's text and syntax tree."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.text = text
        data = text.encode("utf-8")
        self._lines = data.split(b"\n")
        self.tree = _PARSER.parse(data)
        self._line_starts = [0]
        for line in text.split("\n")[:-1]:
            self._line_starts.append(self._line_starts[-1] + len(line) + 1)

    @property
    def root(self) -> Node:
        return self.tree.root_node

    def offset(self, line: int, column: int) -> int:
        """The character offset of a 1-based line and 0-based character column."""
        if not 1 <= line <= len(self._line_starts):
            raise L2MError(f"{self.path} has no line {line}")
        return self._line_starts[line - 1] + column

    def start(self, node: Node) -> int:
        """The character offset where `node` starts."""
        row, col = node.start_point
        return self._line_starts[row] + self._char_column(row, col)

    def end(self, node: Node) -> int:
        """The character offset just past `node`."""
        row, col = node.end_point
        return self._line_starts[row] + self._char_column(row, col)

    def span(self, node: Node) -> Span:
        (row, col), (end_row, end_col) = node.start_point, node.end_point
        return Span(self.path, row + 1, self._char_column(row, col), end_row + 1, self._char_column(end_row, end_col))

    def node_text(self, node: Node) -> str:
        return self.text[self.start(node):self.end(node)]

    def identifier_at(self, span: Span, name: str) -> Node:
        """The identifier node `name` at `span`; `L2MError` when the file no longer has it there (a stale index)."""
        start = self.offset(span.line, span.column)
        if self.text[start:start + len(name)] != name:
            raise L2MError(f"the index is out of date: {name} is not at {span.path}:{span.line}:{span.column + 1}")
        byte = len(self.text[:start].encode("utf-8"))
        node = self.root.descendant_for_byte_range(byte, byte + len(name.encode("utf-8")))
        if node is None or node.type != "identifier":
            raise L2MError(f"{span.path}:{span.line}:{span.column + 1} is not an identifier {name}")
        return node

    def line_start(self, offset: int) -> int:
        """The offset of the start of the line holding `offset`."""
        return self.text.rfind("\n", 0, offset) + 1

    def line_end(self, offset: int) -> int:
        """The offset just past the newline ending the line holding `offset` (or the end of the text)."""
        newline = self.text.find("\n", offset)
        return len(self.text) if newline == -1 else newline + 1

    def _char_column(self, row: int, byte_col: int) -> int:
        return len(self._lines[row][:byte_col].decode("utf-8", errors="replace"))


def walk(node: Node) -> Iterator[Node]:
    """`node` and all its descendants, in document order."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def definition_statement(name_node: Node) -> Node:
    """The whole definition a name belongs to: its function/class (with decorators) or assignment statement."""
    node = name_node.parent
    while node.type in {"assignment", "pattern_list", "tuple_pattern"}:
        node = node.parent
    if node.parent is not None and node.parent.type == "decorated_definition":
        node = node.parent
    return node


def is_name_use(node: Node) -> bool:
    """Whether an identifier names a value here: not an attribute after a dot, a keyword argument, or a module path."""
    parent = node.parent
    if parent is None:
        return True
    if parent.type == "attribute" and parent.child_by_field_name("attribute") == node:
        return False
    if parent.type == "keyword_argument" and parent.child_by_field_name("name") == node:
        return False
    return parent.type != "dotted_name"


def call_of(identifier: Node) -> Node | None:
    """The call node when `identifier` is what gets called (`f(...)` or `obj.f(...)`), else None."""
    parent = identifier.parent
    is_method = parent.type == "attribute" and parent.child_by_field_name("attribute") == identifier
    callee = parent if is_method else identifier
    call = callee.parent
    return call if call.type == "call" and call.child_by_field_name("function") == callee else None


def top_level_names(root: Node) -> dict[str, Node]:
    """The names a module defines at its top level (functions, classes, `NAME = ...`), with their statements."""
    names = {}
    for stmt in root.named_children:
        node = stmt.child_by_field_name("definition") if stmt.type == "decorated_definition" else stmt
        if node.type in ("function_definition", "class_definition"):
            names[node.child_by_field_name("name").text.decode()] = stmt
        elif node.type == "expression_statement" and node.named_children[0].type == "assignment":
            left = node.named_children[0].child_by_field_name("left")
            if left.type == "identifier":
                names[left.text.decode()] = stmt
    return names
