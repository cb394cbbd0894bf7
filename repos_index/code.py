"""Source code -> definition-granularity chunks, symbols, references and imports, via tree-sitter.

Definitions (classes, functions, methods, types, ...) become chunks spanning their decorators, export
keywords and leading doc comments; top-level code between them becomes `module` chunks, so the file's
header (docstring, imports) is a chunk too. Definitions local to a function body are left inside it.
A file nested deeper than `MAX_DEPTH` syntax-tree levels (generated or hostile code: its analysis would
grow with the square of the depth) is cut into line windows instead, with no symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

from tree_sitter import Node

from repos_index.grammars import CONTAINER_KINDS, FUNCTION_KINDS, SPECS, Grammar, grammar, text
from repos_index.prose import analyze_lines
from repos_index.records import Chunk, FileAnalysis, Import, LineTable, Reference, Symbol, ordered

CODE_LANGUAGES = frozenset(SPECS)
_TITLE_CHARS = 200
MAX_DEPTH = 1000  # syntax-tree levels: real code stays under 100 (a chain of n `else if`s takes 2n)


def first_line(node: Node) -> int:
    return node.start_point[0] + 1


def last_line(node: Node) -> int:
    """The last line holding text of the node (a node ending at column 0 ends on the line before)."""
    row, column = node.end_point
    return row if column == 0 and row > node.start_point[0] else row + 1


@dataclass
class _Definition:
    node: Node
    kind: str
    name: str
    qualname: str
    start: Node  # the first node of its span (a decorator, export keyword or doc comment)
    end: Node
    parent: int | None


def analyze_code(source: str, language: str) -> FileAnalysis:
    """Analyse source text in one of `CODE_LANGUAGES`."""
    g = grammar(language)
    data = source.encode("utf-8")
    root = g.parser().parse(data).root_node
    if _deeper_than(root, MAX_DEPTH):
        return analyze_lines(source, language)
    lines = LineTable(source)

    definitions = _definitions(g, root)
    chunks = [
        Chunk(
            ordinal=i,
            kind=d.kind,
            name=d.name,
            qualname=d.qualname,
            title=_signature(d.node, data),
            line_start=first_line(d.start),
            line_end=last_line(d.end),
            byte_start=d.start.start_byte,
            byte_end=d.end.end_byte,
            parent=d.parent,
        )
        for i, d in enumerate(definitions)
    ]
    chunks, renumber = ordered(chunks + _module_chunks(chunks, lines, source, len(chunks)))
    owner = LineTable.innermost(chunks, lines.line_count)

    symbols = [
        Symbol(d.name, d.qualname, d.kind, first_line(d.node), last_line(d.end), renumber[i])
        for i, d in enumerate(definitions)
    ]
    defined_at = {(s.name, s.line_start) for s in symbols}  # a definition's own name is no reference
    if g.variables is not None:
        for node in Grammar.captures(g.variables, root).get("name", []):
            line = first_line(node)
            if (text(node), line) not in defined_at:
                symbols.append(Symbol(text(node), text(node), "variable", line, line, owner[line]))
                defined_at.add((text(node), line))

    return FileAnalysis(
        language=language,
        chunks=chunks,
        symbols=symbols,
        references=_references(g, root, owner, defined_at),
        imports=_imports(g, root),
    )


def _deeper_than(root: Node, limit: int) -> bool:
    """Whether any node lies more than `limit` levels below `root` (a walk that stops as soon as one does)."""
    cursor = root.walk()
    while cursor.depth <= limit:
        if cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return False
    return True


def _definitions(g: Grammar, root: Node) -> list[_Definition]:
    """Definition nodes in document order, each with its enclosing definition; local ones dropped."""
    spec = g.spec
    nodes = sorted(Grammar.captures(g.definitions, root).get("def", []), key=lambda n: (n.start_byte, -n.end_byte))
    found: list[_Definition] = []
    open_stack: list[int] = []  # indices into `found` of definitions enclosing the current node
    for node in nodes:
        while open_stack and found[open_stack[-1]].node.end_byte <= node.start_byte:
            open_stack.pop()
        enclosing = found[open_stack[-1]] if open_stack else None
        if enclosing is not None and (enclosing.kind in FUNCTION_KINDS or enclosing.node.end_byte < node.end_byte):
            continue  # local to a function body (or a malformed overlap)
        described = spec.describe(node, spec.definitions[node.type])
        if described is None or not described[1]:
            continue
        kind, name, scope = described
        if kind == "function" and enclosing is not None and enclosing.kind in CONTAINER_KINDS - {"namespace", "module"}:
            kind = "method"
        prefix = ".".join(p for p in ((enclosing.qualname if enclosing else None), scope) if p)
        start, end = _span(node, g)
        found.append(_Definition(node, kind, name, f"{prefix}.{name}" if prefix else name, start, end,
                                 open_stack[-1] if open_stack else None))
        open_stack.append(len(found) - 1)
    return found


def _span(node: Node, g: Grammar) -> tuple[Node, Node]:
    """Widen a definition to its wrapper (decorators, `export`, `template<>`) and leading doc comments."""
    spec = g.spec
    outer = node
    parent = node.parent
    while parent is not None and parent.type in spec.wrappers and sum(
        1 for c in parent.named_children if c.type in spec.definitions
    ) == 1:
        outer = parent
        parent = parent.parent
    start = outer
    previous = outer.prev_named_sibling
    while previous is not None and previous.type in spec.comments and last_line(previous) >= first_line(start) - 1:
        before = previous.prev_named_sibling
        if before is not None and last_line(before) == first_line(previous):
            break  # a trailing comment of the code before it
        start = previous
        previous = before
    return start, outer


def _signature(node: Node, data: bytes) -> str:
    end = data.find(b"\n", node.start_byte)
    line = data[node.start_byte: end if end != -1 else len(data)].decode("utf-8", "replace").strip()
    return line[:_TITLE_CHARS]


def _module_chunks(chunks: list[Chunk], lines: LineTable, source: str, next_ordinal: int) -> list[Chunk]:
    """Top-level code between definitions, one chunk per run of lines that holds any text."""
    covered = [False] * (lines.line_count + 2)
    for chunk in chunks:
        if chunk.parent is None:
            for line in range(chunk.line_start, chunk.line_end + 1):
                covered[line] = True
    text_lines = source.split("\n")
    found: list[Chunk] = []
    start = None
    for line in range(1, lines.line_count + 2):
        in_gap = line <= lines.line_count and not covered[line]
        if in_gap and start is None:
            start = line
        elif not in_gap and start is not None:
            body = [n for n in range(start, line) if text_lines[n - 1].strip()]
            if body:
                first, last = body[0], body[-1]
                found.append(Chunk(
                    next_ordinal + len(found), "module", None, None, text_lines[first - 1].strip()[:_TITLE_CHARS],
                    first, last, lines.byte_start(first), lines.byte_end(last),
                ))
            start = None
    return found


def _references(
    g: Grammar, root: Node, owner: list[int | None], skip: set[tuple[str, int]]
) -> list[Reference]:
    seen: set[tuple[str, str, int]] = set()
    found: list[Reference] = []
    for capture, nodes in Grammar.captures(g.references, root).items():
        if not capture.startswith("ref."):
            continue
        kind = capture[4:]
        for node in nodes:
            line = first_line(node)
            key = (text(node), kind, line)
            if (key[0], line) not in skip and key not in seen:
                seen.add(key)
                found.append(Reference(key[0], kind, line, owner[line]))
    found.sort(key=lambda r: (r.line, r.name))
    return found


def _imports(g: Grammar, root: Node) -> list[Import]:
    found: list[Import] = []
    for capture, nodes in Grammar.captures(g.imports, root).items():
        if capture.startswith("_"):
            continue
        for node in nodes:
            found.extend(Import(target, first_line(node)) for target in g.spec.import_targets(capture, node) if target)
    found.sort(key=lambda i: (i.line, i.target))
    return found
