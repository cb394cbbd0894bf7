"""Multi-step edit plans: ordered steps (written by a model), checked and annotated from the index, then
executed by the tools into one `EditSet` that is shown as a diff and applied only on request.

A step is `{"action": ..., "args": {...}}`. Planning checks each action and its arguments and lists
the files and symbols it will touch; names renamed by an earlier step are looked up under their
old name. Executing runs the steps in order, each seeing the last one's staged result; if a step
fails, the plan's staged edits are all taken back and the error names the step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from l2m_core.errors import L2MError
from tools.edits import EditSet
from tools.pyindex import PythonIndex
from tools.refactor import Refactoring, add_docstring, add_parameter, move_definition, rename_symbol, set_default
from tools.symbols import SymbolIndex


def _str_replace(edits: EditSet, index: SymbolIndex, path: str, old: str, new: str) -> Refactoring:
    edits.str_replace(path, old, new)
    return Refactoring([edits.ws.relative(path)])


def _insert(edits: EditSet, index: SymbolIndex, path: str, line: int, text: str) -> Refactoring:
    edits.insert(path, line, text)
    return Refactoring([edits.ws.relative(path)])


def _create(edits: EditSet, index: SymbolIndex, path: str, text: str) -> Refactoring:
    edits.create(path, text)
    return Refactoring([edits.ws.relative(path)])


ACTIONS: dict[str, Callable[..., Refactoring]] = {
    "rename_symbol": rename_symbol,
    "add_parameter": add_parameter,
    "move_definition": move_definition,
    "set_default": set_default,
    "add_docstring": add_docstring,
    "str_replace": _str_replace,
    "insert": _insert,
    "create": _create,
}
_SYMBOL_ARG = {"rename_symbol": "old", "add_parameter": "function", "move_definition": "name",
               "set_default": "function", "add_docstring": "function"}


@dataclass(frozen=True)
class PlanStep:
    """One step: an action of `ACTIONS`, its arguments, and the files and symbols it touches."""

    action: str
    args: Mapping[str, Any]
    files: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.action}({args}) touches {', '.join(self.files) or 'no known files'}"


def make_plan(index: SymbolIndex, steps: Iterable[Mapping[str, Any]]) -> list[PlanStep]:
    """Check raw steps (`{"action", "args"}` mappings) and annotate them with what they touch.

    Raises `L2MError` naming the step for an unknown action, wrong arguments, or a symbol the index
    does not know (nor an earlier step creates by renaming).
    """
    plan: list[PlanStep] = []
    renamed: dict[str, str] = {}  # new name -> the name the index knows
    for number, raw in enumerate(steps, 1):
        action, args = raw.get("action"), dict(raw.get("args") or {})
        if action not in ACTIONS:
            raise L2MError(f"step {number}: unknown action {action!r} (known: {', '.join(ACTIONS)})")
        try:
            inspect.signature(ACTIONS[action]).bind(None, None, **args)
        except TypeError as exc:
            raise L2MError(f"step {number} ({action}): {exc}") from None
        if action in _SYMBOL_ARG:
            symbol = args[_SYMBOL_ARG[action]]
            known = renamed.get(symbol, symbol)
            definitions = index.find_symbol(known)
            if not definitions:
                raise L2MError(f"step {number} ({action}): no definition of {symbol} in the index")
            files = {d.span.path for d in definitions} | {r.span.path for r in index.find_references(known)}
            if action == "move_definition":
                files.add(args["dest_file"])
            if action == "rename_symbol":
                renamed[args["new"]] = known
            symbols = (symbol, args["new"]) if action == "rename_symbol" else (symbol,)
            plan.append(PlanStep(action, args, tuple(sorted(files)), symbols))
        else:
            plan.append(PlanStep(action, args, (args["path"],)))
    return plan


def execute_plan(edits: EditSet, plan: Iterable[PlanStep], index: SymbolIndex | None = None) -> list[Refactoring]:
    """Stage every step of `plan` in `edits`, in order; all or nothing.

    `index` defaults to a `PythonIndex` over `edits`, so each step sees the steps before it; an index
    that does not see staged edits is only right for the first step (stale positions raise).
    """
    index = index if index is not None else PythonIndex(edits)
    mark = edits.step_count
    done = []
    for number, step in enumerate(plan, 1):
        try:
            done.append(ACTIONS[step.action](edits, index, **step.args))
        except L2MError as exc:
            while edits.step_count > mark:
                edits.undo()
            raise L2MError(f"step {number} ({step.action}) failed, the plan staged nothing: {exc}") from None
    return done
