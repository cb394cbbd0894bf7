"""The tools as one object an agent (or LangChain) calls: typed methods whose docstrings are their contracts.

Each tool takes JSON-friendly arguments, returns the text a model reads (clipped at 16,000
characters) and raises `L2MError` with a one-line message on bad input. Edits are staged, never
written by a tool: `diff` shows them, and `apply` (called on the user's request, not a tool) writes
them. `run` refuses unless the policy allows the command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from l2m_core.errors import L2MError
from tools.apply import ApplyOutcome, apply_and_test
from tools.edits import EditSet
from tools.journal import UndoJournal
from tools.pyindex import PythonIndex
from tools.refactor import Refactoring, add_parameter, move_definition, rename_symbol
from tools.run import RUN_OFF, RunPolicy, run_command
from tools.search import search_text
from tools.symbols import Symbol, SymbolIndex
from tools.view import clip, number_lines, view_file
from tools.workspace import Workspace

TOOL_NAMES = (
    "view", "search", "find_symbol", "find_references", "outline",
    "str_replace", "insert", "create", "rename_symbol", "add_parameter", "move_definition",
    "undo", "diff", "run",
)
SNIPPET_LINES = 4


class Toolbox:
    """The tools over one repository; `tools()` maps each tool name to its bound method."""

    def __init__(
        self,
        root: str | Path,
        index: SymbolIndex | None = None,
        policy: RunPolicy = RUN_OFF,
        journal: UndoJournal | None = None,
    ):
        self.ws = Workspace(root)
        self.edits = EditSet(self.ws, journal)
        self.index = index if index is not None else PythonIndex(self.edits)
        self.policy = policy

    def tools(self) -> dict[str, Callable[..., str]]:
        return {name: getattr(self, name) for name in TOOL_NAMES}

    def apply(self, test: Sequence[str] | None = None, revert_on_fail: bool = False) -> ApplyOutcome:
        """Write the staged edits (the user asked for it), then run `test` if given; see `apply_and_test`."""
        return apply_and_test(self.edits, test, policy=self.policy, revert_on_fail=revert_on_fail)

    # -- reading -----------------------------------------------------------------------------------

    def view(self, path: str, start: int = 1, end: int | None = None) -> str:
        """Show lines start..end of a file (1-based, inclusive; no end: to the last line) with line numbers,
        staged edits included. For a folder, list its files two levels deep."""
        return view_file(self.ws, path, start, end, source=self.edits)

    def search(self, pattern: str, paths: list[str] | None = None, ignore_case: bool = False) -> str:
        """Find lines matching a Python regular expression, as "path:line: text". `paths` keeps only files
        matching these gitignore-style patterns, such as "*.py" or "src/"."""
        matches = search_text(self.edits, pattern, paths or (), ignore_case)
        return clip("\n".join(map(str, matches))) if matches else f"no line matches {pattern!r}"

    def find_symbol(self, name: str) -> str:
        """Where a function, class, method or module variable is defined: "path:line:col kind name"."""
        found = self.index.find_symbol(name)
        return clip("\n".join(map(_describe, found))) if found else f"no definition of {name}"

    def find_references(self, name: str) -> str:
        """Where a name is used (calls, imports, attributes, plain uses): "path:line:col context"."""
        found = self.index.find_references(name)
        return clip("\n".join(f"{r.span} {r.context}" for r in found)) if found else f"no references to {name}"

    def outline(self, path: str) -> str:
        """The definitions in a file, in order: "line kind name", methods and nested functions indented."""
        found = self.index.outline(self.ws.relative(path))
        lines = [f"{'    ' if s.parent else ''}{s.span.line} {s.kind} {s.name}" for s in found]
        return clip("\n".join(lines)) if lines else f"{path} defines nothing"

    # -- editing (staged) --------------------------------------------------------------------------

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        """Stage replacing old_str, which must occur exactly once in the file (whitespace included), by
        new_str. Returns the edited lines with line numbers."""
        line = self.edits.str_replace(path, old_str, new_str)
        return self._snippet(path, line, new_str.count("\n") + 1)

    def insert(self, path: str, line: int, text: str) -> str:
        """Stage inserting text as new lines after line `line` of a file (0: before the first line)."""
        self.edits.insert(path, line, text)
        return self._snippet(path, line + 1, text.count("\n") + 1)

    def create(self, path: str, text: str) -> str:
        """Stage a new file with the given text; refuses a path that already exists."""
        self.edits.create(path, text)
        return f"staged new file {self.ws.relative(path)} ({len(text.splitlines())} lines)"

    def rename_symbol(self, old: str, new: str) -> str:
        """Stage renaming a defined symbol and every reference to it, across the repository."""
        return _report(f"renamed {old} to {new}", rename_symbol(self.edits, self.index, old, new))

    def add_parameter(self, function: str, parameter: str, argument: str | None = None,
                      default: str | None = None) -> str:
        """Stage adding a parameter to a Python function: the definition gets `parameter` (or
        `parameter=default`) and, when `argument` (a Python expression) is given, every call passes
        `parameter=argument`."""
        done = add_parameter(self.edits, self.index, function, parameter, argument, default)
        return _report(f"added {parameter} to {function}", done)

    def move_definition(self, name: str, dest_file: str) -> str:
        """Stage moving a top-level Python function, class or variable to another file (created if
        missing), fixing the imports that name it."""
        return _report(f"moved {name} to {dest_file}", move_definition(self.edits, self.index, name, dest_file))

    def undo(self, path: str | None = None) -> str:
        """Take back the last staged edit (of `path`, if given); with nothing staged (for it), undo the last
        applied change (of `path`), restoring the files as they were."""
        if self.edits.step_count:
            with contextlib.suppress(L2MError):
                return f"took back the last staged edit of {self.edits.undo(path)}"
        restored = self.edits.journal.undo(self.ws, path)
        return f"restored {', '.join(restored)} as before the last applied edit"

    def diff(self) -> str:
        """All staged edits as one unified diff (what applying would write)."""
        return clip(self.edits.diff()) or "no staged edits"

    # -- running -----------------------------------------------------------------------------------

    def run(self, argv: list[str], timeout: float = 60.0) -> str:
        """Run a command given as an argument list (no shell: no pipes, redirection or variables) in the
        repository root, if the user allowed it. Returns the exit status and the output."""
        result = run_command(argv, self.ws.root, timeout=timeout, policy=self.policy)
        status = f"timed out after {timeout:g} s" if result.timed_out else f"exit status {result.returncode}"
        return clip(f"{status}\n{result.output}")

    def _snippet(self, path: str, line: int, count: int) -> str:
        text = self.edits.read_text(path)
        last = len(text.splitlines())
        if not last:
            return f"staged edit of {self.ws.relative(path)}: the file is now empty"
        start = max(1, line - SNIPPET_LINES)
        end = min(last, line + count - 1 + SNIPPET_LINES)
        return f"staged edit of {self.ws.relative(path)}:\n{number_lines(text, start, end, path)}"


def _describe(symbol: Symbol) -> str:
    inside = f" (in {symbol.parent})" if symbol.parent else ""
    return f"{symbol.span} {symbol.kind} {symbol.name}{inside}"


def _report(summary: str, done: Refactoring) -> str:
    lines = [f"staged: {summary} in {', '.join(done.files)}", *done.notes]
    return clip("\n".join(lines))
