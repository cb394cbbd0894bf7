"""Structured refactorings: the mechanical work of an edit plan, done reliably so a small model only plans.

Each function finds what to change through a `SymbolIndex` (where a name is defined and used),
checks every position against the current text (a stale index is an error, not a wrong edit), and
stages the result in an `EditSet`; nothing reaches the disk until the set is applied. A refactoring
that fails stages nothing. `add_parameter`, `set_default`, `add_docstring` and `move_definition`
understand Python syntax.
"""

from __future__ import annotations

import keyword
from collections import defaultdict
from dataclasses import dataclass, field

from tree_sitter import Node

from l2m_core.errors import L2MError
from tools.edits import EditSet
from tools.pyimports import (
    Imported,
    import_insertion_point,
    imports_of,
    is_package,
    module_name,
    render,
    render_from,
    spell,
)
from tools.pysyntax import PySource, call_of, definition_statement, is_name_use, top_level_names, walk
from tools.symbols import Span, Symbol, SymbolIndex

_SPLATS = ("list_splat_pattern", "keyword_separator")
_DEFAULTED = ("default_parameter", "typed_default_parameter")
_IMPORTS = ("import_statement", "import_from_statement", "future_import_statement")


@dataclass
class Refactoring:
    """What a refactoring staged: the files it changed, and uses it found but left alone (with why)."""

    files: list[str]
    notes: list[str] = field(default_factory=list)


def rename_symbol(edits: EditSet, index: SymbolIndex, old: str, new: str) -> Refactoring:
    """Rename the one definition of `old` and every reference the index reports to `new`.

    Refuses (`L2MError`, nothing staged) when `new` is not an identifier, is already defined, or is
    already used as a name in a file the rename touches (it would capture that use); when `old` has
    no definition or several; or when the index no longer matches the files.
    """
    _check_identifier(new)
    definition = _one_definition(index, old)
    clash = index.find_symbol(new)
    if clash:
        raise L2MError(f"{new} is already defined at {clash[0].span}; choose another name")
    by_file: dict[str, list[Span]] = defaultdict(list)
    for span in [definition.span, *(r.span for r in index.find_references(old))]:
        by_file[span.path].append(span)
    captured = [r for r in index.find_references(new) if r.span.path in by_file and r.context != "attribute"]
    if captured:
        raise L2MError(f"{new} is already used at {captured[0].span}; renaming {old} to it would capture that use")
    planned = {}
    for path, spans in by_file.items():
        text = edits.read_text(path)
        starts = _line_starts(text)
        planned[path] = []
        for span in spans:
            start = starts[span.line - 1] + span.column if 1 <= span.line <= len(starts) else None
            if start is None or text[start:start + len(old)] != old:
                raise L2MError(f"the index is out of date: {old} is not at {span}; re-index and retry")
            planned[path].append((start, start + len(old), new))
    for path, spans in planned.items():
        edits.replace_spans(path, spans)
    return Refactoring(sorted(planned))


def add_parameter(
    edits: EditSet,
    index: SymbolIndex,
    function: str,
    parameter: str,
    argument: str | None = None,
    default: str | None = None,
) -> Refactoring:
    """Add `parameter` to the one Python function or method `function`, and `parameter=argument` to each call.

    With `default`, the definition gets `parameter=default`; with `argument`, every call site passes it
    by keyword (so positional arguments keep their meaning). A parameter without default that would
    follow defaulted ones becomes keyword-only. Uses that are not calls are left alone and noted.
    """
    _check_identifier(parameter)
    if argument is None and default is None:
        raise L2MError(f"adding {parameter} needs the argument call sites pass, a default, or both")
    definition = _one_definition(index, function, kinds=("function", "method"))
    sources: dict[str, PySource] = {}
    src = _source(edits, sources, definition.span.path)
    params = src.identifier_at(definition.span, function).parent.child_by_field_name("parameters")
    planned: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    planned[src.path].append(_parameter_insertion(src, params, parameter, default))
    notes = []
    calls = index.find_references(function) if argument is not None else []
    for ref in calls:
        site = _source(edits, sources, ref.span.path)
        call = call_of(site.identifier_at(ref.span, function))
        if call is None or call.child_by_field_name("arguments").type != "argument_list":
            if ref.context != "import":
                notes.append(f"{ref.span}: {function} is used here without a plain call; not updated")
            continue
        args = call.child_by_field_name("arguments")
        for arg in args.named_children:
            if arg.type == "keyword_argument" and site.node_text(arg.child_by_field_name("name")) == parameter:
                raise L2MError(f"{ref.span}: this call already passes {parameter}")
        planned[site.path].append(_append_item(site, args, f"{parameter}={argument}"))
    for path, spans in planned.items():
        edits.replace_spans(path, spans)
    return Refactoring(sorted(planned), notes)


def parameters(edits: EditSet, index: SymbolIndex, function: str) -> dict[str, str | None]:
    """The named parameters of the one Python function or method `function`, each with its default's source
    (None when it has none); splats left out."""
    definition = _one_definition(index, function, kinds=("function", "method"))
    src = _source(edits, {}, definition.span.path)
    params = src.identifier_at(definition.span, function).parent.child_by_field_name("parameters")
    out: dict[str, str | None] = {}
    for item in params.named_children:
        name = None if item.type in (*_SPLATS, "comment", "dictionary_splat_pattern") else _parameter_name(src, item)
        if name is not None:
            value = item.child_by_field_name("value")
            out[name] = None if value is None else src.node_text(value)
    return out


def set_default(edits: EditSet, index: SymbolIndex, function: str, parameter: str, default: str) -> Refactoring:
    """Give `parameter` of the one Python function or method `function` the default `default` (a Python
    expression), replacing the default it has. Refuses a parameter the function lacks, a splat, and a
    new default before parameters without one (it would not compile)."""
    definition = _one_definition(index, function, kinds=("function", "method"))
    src = _source(edits, {}, definition.span.path)
    params = src.identifier_at(definition.span, function).parent.child_by_field_name("parameters")
    items = [c for c in params.named_children if c.type != "comment"]
    found = [n for n, c in enumerate(items) if c.type not in _SPLATS and _parameter_name(src, c) == parameter]
    if not found:
        raise L2MError(f"{function} has no parameter {parameter}")
    item = items[found[0]]
    value = item.child_by_field_name("value")
    if value is not None:
        edits.replace_spans(src.path, [(src.start(value), src.end(value), default)])
        return Refactoring([src.path])
    if item.type not in ("identifier", "typed_parameter"):
        raise L2MError(f"{src.path}:{item.start_point[0] + 1}: {parameter} cannot take a default")
    later = items[found[0] + 1:]
    positional = later[:next((n for n, c in enumerate(later) if c.type in _SPLATS), len(later))]
    if not all(c.type in (*_DEFAULTED, "dictionary_splat_pattern") for c in positional):
        raise L2MError(f"{parameter} is followed by parameters without a default; giving it one would not compile")
    piece = f"={default}" if item.type == "identifier" else f" = {default}"
    edits.replace_spans(src.path, [(src.end(item), src.end(item), piece)])
    return Refactoring([src.path])


def add_docstring(edits: EditSet, index: SymbolIndex, function: str, docstring: str) -> Refactoring:
    """Give the one Python function, method or class `function` the one-line docstring `docstring`.
    Refuses a definition that has a docstring already or whose body shares its line."""
    definition = _one_definition(index, function, kinds=("function", "method", "class"))
    src = _source(edits, {}, definition.span.path)
    body = src.identifier_at(definition.span, function).parent.child_by_field_name("body")
    first = next((c for c in body.named_children if c.type != "comment"), None)
    if first is not None and first.type == "expression_statement" and first.named_children[0].type == "string":
        raise L2MError(f"{function} already has a docstring at {src.path}:{first.start_point[0] + 1}")
    at = src.start(body)
    if src.line_start(at) == src.line_start(src.start(body.parent)):
        raise L2MError(f"{src.path}:{body.start_point[0] + 1}: the body of {function} is on its def line")
    text = " ".join(docstring.replace('"""', "'''").split()).rstrip("\\")
    if not text:
        raise L2MError("the docstring is empty")
    indent = src.text[src.line_start(at):at]
    edits.replace_spans(src.path, [(at, at, f'"""{text}"""\n{indent}')])
    return Refactoring([src.path])


def move_definition(edits: EditSet, index: SymbolIndex, name: str, dest_file: str) -> Refactoring:
    """Move the top-level Python definition `name` to `dest_file` (created if missing) and fix the imports.

    The destination gets the imports the moved code uses; the source imports it back if it still uses
    it; `from source import name` elsewhere now names the destination, and `source_module.name`
    becomes `dest_module.name`. Refuses a move that would make the two modules import each other.
    """
    definition = _one_definition(index, name, kinds=("function", "class", "variable"))
    ws = edits.ws
    dest = ws.relative(ws.resolve_writable(dest_file))
    source_path = definition.span.path
    if not dest.endswith(".py"):
        raise L2MError(f"{dest} is not a Python file")
    if dest == source_path:
        raise L2MError(f"{name} is already in {dest}")
    files = set(edits.list_files()) | {dest}
    modules = _Modules(files, source_path, dest)
    src = PySource(source_path, edits.read_text(source_path))
    stmt = definition_statement(src.identifier_at(definition.span, name))
    if stmt.parent.type != "module":
        raise L2MError(f"{name} at {definition.span} is not a top-level definition")
    start, end = src.line_start(src.start(stmt)), src.line_end(src.end(stmt))
    while start and src.text[src.line_start(start - 1):start].startswith("#"):  # comments right above go along
        start = src.line_start(start - 1)
    moved = src.text[start:end]
    used = {src.node_text(n) for n in walk(stmt) if n.type == "identifier" and is_name_use(n)} - {name}
    source_imports = [i for i in imports_of(src, modules.source, is_package(source_path))
                      if i.bound in used and i.module != modules.dest]
    from_source = sorted(used & set(top_level_names(src.root)) - {name})
    rest = PySource(source_path, _tidy(src.text[:start] + src.text[end:].lstrip("\n")))
    notes: list[str] = []
    dest_exists = edits.exists(dest)
    dest_src = _retarget(PySource(dest, edits.read_text(dest) if dest_exists else ""), modules, name, notes, True)
    if _uses(rest, name) and (from_source or modules.imports_source(dest_src)):
        why = f"it would need {', '.join(from_source)}" if from_source else f"it imports {modules.source}"
        raise L2MError(f"moving {name} would make {source_path} and {dest} import each other ({why} from "
                       f"{source_path}, which still uses {name}); move those too or move {name} elsewhere")
    new_source = _drop_unused_imports(rest, modules.source, source_imports)
    if _uses(new_source, name):
        new_source = _add_imports(new_source, [render_from(modules.dest_from(source_path), [(name, name)])])
    touched = {source_path: new_source.text}
    needed = []
    for items in _by_statement(source_imports).values():
        if items[0].name is None:
            needed.extend(render(i, i.module) for i in items)
        else:
            spelled = spell(modules.dest, is_package(dest), items[0].module, items[0].relative)
            needed.append(render_from(spelled, [(i.name, i.bound) for i in items]))
    if from_source:
        needed.append(render_from(modules.source, [(n, n) for n in from_source]))
    dest_src = _add_imports(dest_src, needed)
    body = dest_src.text.rstrip("\n")
    dest_text = f"{body}\n\n\n{moved}" if body else moved
    for path in sorted({r.span.path for r in index.find_references(name)} - {source_path, dest}):
        retargeted = _retarget(PySource(path, edits.read_text(path)), modules, name, notes, local=False)
        if retargeted.text != edits.read_text(path):
            touched[path] = retargeted.text
    for path, text in touched.items():
        edits.rewrite(path, text)
    if dest_exists:
        edits.rewrite(dest, dest_text)
    else:
        edits.create(dest, dest_text)
    return Refactoring(sorted({*touched, dest}), notes)


class _Modules:
    """The module names of the move's source and destination, and how other files spell them."""

    def __init__(self, files: set[str], source_path: str, dest_path: str):
        self.files = files
        self.source = module_name(source_path, files)
        self.dest = module_name(dest_path, files)

    def name_of(self, path: str) -> str:
        return module_name(path, self.files)

    def dest_from(self, importer_path: str, relative: bool = False) -> str:
        """How the file `importer_path` names the destination module in a `from ... import`."""
        return spell(self.name_of(importer_path), is_package(importer_path), self.dest, relative)

    def imports_source(self, src: PySource) -> bool:
        """Whether a file imports anything from the source module (or the module itself)."""
        imported = imports_of(src, self.name_of(src.path), is_package(src.path))
        return any(i.module == self.source or _names_module(i, self.source) for i in imported)


def _retarget(src: PySource, modules: _Modules, name: str, notes: list[str], local: bool) -> PySource:
    """Point one file's imports and `module.name` uses of `name` at the destination (or at itself, if `local`)."""
    importer = modules.name_of(src.path)
    imported = imports_of(src, importer, is_package(src.path))
    spans: list[tuple[int, int, str]] = []
    extra: list[str] = []
    for stmt, items in _by_statement(imported).items():
        moving = [i for i in items if i.name == name and i.module == modules.source]
        if stmt.type == "import_statement" or not moving:
            continue
        if local and any(i.bound != name for i in moving):
            notes.append(f"{src.path}: {name} was imported under another name; check its uses")
        staying = [(i.name, i.bound) for i in items if i not in moving]
        module_text = src.node_text(stmt.child_by_field_name("module_name"))
        target = modules.dest_from(src.path, relative=module_text.startswith("."))
        replacement = [render_from(module_text, staying)] if staying else []
        if not local:
            replacement.append(render_from(target, [(name, i.bound) for i in moving]))
        spans.append(_replace_lines(src, stmt, replacement))
    accesses = {i.access for i in imported if _names_module(i, modules.source)}
    binding, access = _module_binding(src, modules.dest)
    for node in walk(src.root):
        if node.type == "attribute" and src.node_text(node.child_by_field_name("attribute")) == name:
            obj = node.child_by_field_name("object")
            if src.node_text(obj) in accesses:
                if local:
                    spans.append((src.start(node), src.end(node), name))
                else:
                    spans.append((src.start(obj), src.end(obj), access))
                    extra = [binding]
    text = src.text
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return _add_imports(PySource(src.path, text), extra)


def _module_binding(src: PySource, module: str) -> tuple[str, str]:
    """An import making `module` reachable, and how code then names it: `from pkg import mod` when `mod` is free."""
    package, _, leaf = module.rpartition(".")
    if package and not any(n.type == "identifier" and src.node_text(n) == leaf for n in walk(src.root)):
        return f"from {package} import {leaf}", leaf
    return f"import {module}", module


def _names_module(imported: Imported, module: str) -> bool:
    """Whether an import binds the module itself (`import m`, `import m as x`, `from pkg import m`)."""
    if imported.name is None:
        return imported.module == module
    return f"{imported.module}.{imported.name}" == module


def _by_statement(imported: list[Imported]) -> dict[Node, list[Imported]]:
    groups: dict[Node, list[Imported]] = {}
    for item in imported:
        groups.setdefault(item.statement, []).append(item)
    return groups


def _drop_unused_imports(src: PySource, module: str, candidates: list[Imported]) -> PySource:
    """Remove names among `candidates` that module `src` no longer uses from their import statements."""
    unused = {i.bound for i in candidates if not _uses(src, i.bound)}
    if not unused:
        return src
    spans = []
    current = imports_of(src, module, is_package(src.path))
    for stmt in dict.fromkeys(i.statement for i in current if i.bound in unused):
        items = [i for i in current if i.statement == stmt]
        keep = [i for i in items if i.bound not in unused]
        if stmt.type == "import_statement":
            lines = [render(i, i.module) for i in keep]
        elif keep:
            module_text = src.node_text(stmt.child_by_field_name("module_name"))
            lines = [render_from(module_text, [(i.name, i.bound) for i in keep])]
        else:
            lines = []
        spans.append(_replace_lines(src, stmt, lines))
    text = src.text
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return PySource(src.path, text)


def _add_imports(src: PySource, lines: list[str]) -> PySource:
    """Insert import lines the file lacks: after its last module-level import, or in a block of their own."""
    existing = set(src.text.splitlines())
    block = "".join(f"{line}\n" for line in dict.fromkeys(lines) if line not in existing)
    if not block:
        return src
    at = import_insertion_point(src)
    if any(s.type in _IMPORTS for s in src.root.named_children):
        return PySource(src.path, src.text[:at] + block + src.text[at:])
    head, tail = src.text[:at].rstrip("\n"), src.text[at:].lstrip("\n")
    return PySource(src.path, (f"{head}\n\n" if head else "") + block + (f"\n\n{tail}" if tail else ""))


def _replace_lines(src: PySource, node: Node, lines: list[str]) -> tuple[int, int, str]:
    """Replace the whole lines holding `node` by `lines` (keeping its indentation)."""
    start, end = src.line_start(src.start(node)), src.line_end(src.end(node))
    indent = src.text[start:src.start(node)]
    return start, end, "".join(f"{indent}{line}\n" for line in lines)


def _uses(src: PySource, name: str) -> bool:
    """Whether the code uses `name` as a value (imports do not count)."""
    return any(
        n.type == "identifier" and src.node_text(n) == name and is_name_use(n) and not _in_import(n)
        for n in walk(src.root)
    )


def _in_import(node: Node) -> bool:
    while node is not None:
        if node.type in _IMPORTS:
            return True
        node = node.parent
    return False


def _tidy(text: str) -> str:
    """At most two blank lines in a row at the top level, and exactly one newline at the end."""
    while "\n\n\n\n" in text:
        text = text.replace("\n\n\n\n", "\n\n\n")
    return text.rstrip("\n") + "\n" if text.strip() else ""


def _parameter_insertion(src: PySource, params: Node, parameter: str, default: str | None) -> tuple[int, int, str]:
    items = [c for c in params.named_children if c.type != "comment"]
    if parameter in {_parameter_name(src, c) for c in items}:
        raise L2MError(f"{src.path}:{params.start_point[0] + 1}: the function already has a parameter {parameter}")
    piece = parameter if default is None else f"{parameter}={default}"
    has_splat = any(c.type in _SPLATS for c in items)
    if default is None and not has_splat and any(c.type in _DEFAULTED for c in items):
        piece = f"*, {piece}"  # a parameter without default cannot follow defaulted ones: make it keyword-only
    kwargs = next((c for c in items if c.type == "dictionary_splat_pattern"), None)
    if kwargs is not None:
        at = src.start(kwargs)
        return at, at, f"{piece}, "
    return _append_item(src, params, piece)


def _append_item(src: PySource, bracketed: Node, piece: str) -> tuple[int, int, str]:
    """An insertion of `piece` as the last item of a parameter or argument list."""
    items = [c for c in bracketed.named_children if c.type != "comment"]
    if items:
        at = src.end(items[-1])
        return at, at, f", {piece}"
    at = src.start(bracketed) + 1
    return at, at, piece


def _parameter_name(src: PySource, node: Node) -> str | None:
    if node.type == "identifier":
        return src.node_text(node)
    named = node.child_by_field_name("name") or next((c for c in node.named_children if c.type == "identifier"), None)
    return None if named is None else src.node_text(named)


def _one_definition(index: SymbolIndex, name: str, kinds: tuple[str, ...] | None = None) -> Symbol:
    found = [s for s in index.find_symbol(name) if kinds is None or s.kind in kinds]
    if not found:
        what = "a definition" if kinds is None else " or ".join(kinds)
        raise L2MError(f"no {what} named {name} in the index")
    if len(found) > 1:
        places = ", ".join(str(s.span) for s in found)
        raise L2MError(f"{name} is defined {len(found)} times ({places}); the tool needs exactly one")
    return found[0]


def _check_identifier(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise L2MError(f"{name!r} is not a valid identifier")


def _source(edits: EditSet, cache: dict[str, PySource], path: str) -> PySource:
    if path not in cache:
        cache[path] = PySource(path, edits.read_text(path))
    return cache[path]


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for line in text.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    return starts
