"""The file dependency graph (imports resolved to files, plus names used from where they are defined)
and an ingest order that puts definitions before their uses.

Edges point from a user to what it uses. Name edges count only names defined in a few files
(`MAX_DEFINERS`): a name defined everywhere (`get`, `__init__`) says nothing about dependencies.
Methods and member calls (`x.update()`) make no edges: a method name says little about which class
is meant (`update` on a set is not `CorpusIndex.update`). A name a file imports explicitly is left to
its import, which says exactly where it comes from.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, select

from repos_index import schema

MAX_DEFINERS = 3
_JS_SUFFIXES = ("", ".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".d.ts")
_JS_LANGUAGES = frozenset({"javascript", "typescript", "tsx"})


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the graph needs to know about one indexed file."""

    path: str
    language: str
    imports: tuple[tuple[str, int], ...]  # (target as written, line)
    defines: frozenset[str]  # names of definitions other than methods
    uses: frozenset[str]  # names used other than by a member call or an import


class PathIndex:
    """Lookups over the set of indexed paths: exact, by suffix, and by folder."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = set(paths)
        self.by_name: dict[str, list[str]] = defaultdict(list)
        self.by_folder: dict[str, list[str]] = defaultdict(list)
        for path in self.paths:
            folder, name = posixpath.split(path)
            self.by_name[name].append(path)
            self.by_folder[folder].append(path)

    def suffix(self, relative: str) -> list[str]:
        """Paths equal to `relative` or ending with "/" + `relative`."""
        if relative in self.paths:
            return [relative]
        return [p for p in self.by_name.get(posixpath.basename(relative), ()) if p.endswith("/" + relative)]

    def folder_suffix(self, folder: str, suffix: str) -> list[str]:
        """Files with `suffix` in the folder equal to, or ending with, `folder`."""
        found = []
        for name, paths in self.by_folder.items():
            if name == folder or name.endswith("/" + folder):
                found.extend(p for p in paths if p.endswith(suffix))
        return found


def resolve_import(facts: FileFacts, target: str, index: PathIndex) -> list[str]:
    """The indexed files an import refers to (empty for the standard library and third parties)."""
    folder = posixpath.dirname(facts.path)
    language = facts.language
    if language == "python":
        return _python(target, folder, index)
    if language in _JS_LANGUAGES:
        if not target.startswith("."):
            return []
        base = posixpath.normpath(posixpath.join(folder, target))
        for candidate in [base + s for s in _JS_SUFFIXES] + [f"{base}/index{s}" for s in _JS_SUFFIXES[1:]]:
            if candidate in index.paths:
                return [candidate]
        return []
    if language == "go":
        parts = target.split("/")
        for k in range(len(parts)):
            found = index.folder_suffix("/".join(parts[k:]), ".go")
            if found:
                return [p for p in found if not p.endswith("_test.go")]
        return []
    if language == "rust":
        return _rust(target, facts.path, index)
    if language == "java":
        dotted = target.removesuffix(".*")
        parts = dotted.split(".")
        if target.endswith(".*"):
            return index.folder_suffix("/".join(parts), ".java")
        for k in range(len(parts), 0, -1):
            found = index.suffix("/".join(parts[:k]) + ".java")
            if found:
                return found
        return []
    if language in ("c", "cpp"):
        local = posixpath.normpath(posixpath.join(folder, target))
        return [local] if local in index.paths else _closest(index.suffix(target), folder)
    return []


def _python(target: str, folder: str, index: PathIndex) -> list[str]:
    dots = len(target) - len(target.lstrip("."))
    parts = [p for p in target[dots:].split(".") if p]
    if dots:
        base = folder
        for _ in range(dots - 1):
            base = posixpath.dirname(base)
        stem = posixpath.join(base, *parts) if parts else base
        for candidate in (stem + ".py", stem + "/__init__.py"):
            if candidate in index.paths:
                return [candidate]
        return []
    for k in range(len(parts)):  # drop leading packages when the root sits inside the package
        stem = "/".join(parts[k:])
        for candidate in (stem + ".py", stem + "/__init__.py"):
            found = index.suffix(candidate)
            if found:
                return _closest(found, folder)
    return []


def _rust(target: str, path: str, index: PathIndex) -> list[str]:
    folder = posixpath.dirname(path)
    if target.startswith("mod "):
        name = target[4:]
        stem = posixpath.basename(path).removesuffix(".rs")
        here = folder if stem in ("lib", "main", "mod") else posixpath.join(folder, stem)
        for candidate in (f"{here}/{name}.rs".lstrip("/"), f"{here}/{name}/mod.rs".lstrip("/")):
            if candidate in index.paths:
                return [candidate]
        return []
    parts = [p for p in target.split("::") if p and p not in ("crate", "self", "super")]
    for start in range(min(2, len(parts))):  # the first part may be the crate's own name
        for end in range(len(parts), start, -1):
            stem = "/".join(parts[start:end])
            found = index.suffix(stem + ".rs") or index.suffix(stem + "/mod.rs")
            if found:
                return _closest(found, folder)
    return []


def _closest(found: list[str], folder: str) -> list[str]:
    """Of several candidates, those sharing the longest leading folder path with the importer."""
    if len(found) <= 1:
        return found

    def shared(path: str) -> int:
        return len(posixpath.commonpath([path, folder])) if folder else 0

    best = max(shared(p) for p in found)
    return sorted(p for p in found if shared(p) == best)


def load_facts(engine: Engine) -> list[FileFacts]:
    """Read every indexed file's imports, defined names and used names."""
    imports: dict[int, list[tuple[str, int]]] = defaultdict(list)
    defined: dict[int, set[str]] = defaultdict(set)
    used: dict[tuple[int, str], set[str]] = defaultdict(set)  # (file, use kind) -> names
    s, r = schema.symbols, schema.references
    with engine.connect() as conn:
        files = conn.execute(select(schema.files.c.id, schema.files.c.path, schema.files.c.language)).all()
        for file_id, target, line in conn.execute(
            select(schema.imports.c.file_id, schema.imports.c.target, schema.imports.c.line)
        ):
            imports[file_id].append((target, line))
        for file_id, name in conn.execute(
            select(s.c.file_id, s.c.name).where(s.c.kind.not_in(("term", "method", "constructor")))
        ):
            defined[file_id].add(name)
        for file_id, name, kind in conn.execute(
            select(r.c.file_id, r.c.name, r.c.kind).where(r.c.kind != "method").distinct()
        ):
            used[(file_id, "import" if kind == "import" else "other")].add(name)
    return [
        FileFacts(path, language, tuple(imports[i]), frozenset(defined[i]),
                  frozenset(used[(i, "other")] - used[(i, "import")]))
        for i, path, language in files
    ]


def build_graph(all_facts: Iterable[FileFacts]) -> dict[str, set[str]]:
    """path -> the paths it depends on (by import or by a rarely defined name it uses)."""
    facts = list(all_facts)
    index = PathIndex(f.path for f in facts)
    definers: dict[str, list[str]] = defaultdict(list)
    for f in facts:
        for name in f.defines:
            definers[name].append(f.path)
    graph: dict[str, set[str]] = {f.path: set() for f in facts}
    for f in facts:
        edges = graph[f.path]
        edges.update(_resolve_imports(f, index))
        for name in f.uses - f.defines:
            where = definers.get(name)
            if where and len(where) <= MAX_DEFINERS:
                edges.update(where)
        edges.discard(f.path)
    return graph


def _resolve_imports(facts: FileFacts, index: PathIndex) -> set[str]:
    """Files imported. Of `from pkg import mod` (targets pkg.mod and pkg on one line) only the most
    specific target that resolves counts, so a package's `__init__` is not a dependency of every user."""
    found: set[str] = set()
    by_line: dict[int, list[str]] = defaultdict(list)
    for target, line in facts.imports:
        by_line[line].append(target)
    for targets in by_line.values():
        resolved: list[str] = []
        for target in sorted(targets, key=len, reverse=True):
            if any(r.startswith(target + ".") for r in resolved):
                continue
            files = resolve_import(facts, target, index)
            if files:
                resolved.append(target)
                found.update(files)
    return found


def dependency_order(graph: dict[str, set[str]]) -> list[str]:
    """Every node once, dependencies before dependents; files in a cycle are ordered by their
    dependencies inside the cycle (fewest first), then by path. Iterative Tarjan SCC."""
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    order: list[str] = []
    counter = 0
    for start in sorted(graph):
        if start in index_of:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index_of[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, neighbours = work[-1]
            advanced = False
            for nxt in neighbours:
                if nxt not in graph:
                    continue
                if nxt not in index_of:
                    index_of[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index_of[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                members = set(component)
                order.extend(sorted(component, key=lambda p: (len(graph[p] & members), p)))
    return order
