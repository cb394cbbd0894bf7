"""Turning an edit task into a plan of tool steps (`tools.plan`): a small model plans, the tools execute.

Three sources, tried in order, each named in the result so the user sees where a plan came from:
1. a scripted plan: the task is a JSON list of `{"action", "args"}` steps (or a file holding one);
2. rules: plain refactoring requests ("rename X to Y", "add parameter P=D to F", "move X to FILE"),
   several joined by "then" or ";";
3. the model, reading memory, asked for a JSON plan; its reply is validated like any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.replies import first_json
from l2m_core.errors import L2MError
from tools.plan import ACTIONS, PlanStep, make_plan
from tools.symbols import SymbolIndex

_NAME = r"`?([A-Za-z_][\w.]*)`?"
_RULES: list[tuple[re.Pattern, Callable[[re.Match], dict]]] = [
    (re.compile(rf"^rename\s+(?:the\s+)?(?:function|class|method|symbol|variable)?\s*{_NAME}\s+(?:to|as)\s+{_NAME}$",
                re.I),
     lambda m: {"action": "rename_symbol", "args": {"old": m[1], "new": m[2]}}),
    (re.compile(rf"^add\s+(?:a\s+)?(?:parameter|argument)\s+{_NAME}\s*(?:=\s*(\S+?)|\s+with\s+default\s+(\S+?))?"
                rf"\s+to\s+(?:the\s+)?(?:function\s+|method\s+)?{_NAME}(?:\s+passing\s+(.+))?$", re.I),
     lambda m: {"action": "add_parameter", "args": {k: v for k, v in {
         "function": m[4], "parameter": m[1], "default": m[2] or m[3], "argument": m[5]}.items() if v}}),
    (re.compile(rf"^move\s+(?:the\s+)?(?:function\s+|class\s+)?{_NAME}\s+(?:in)?to\s+`?([\w./-]+\.py)`?$", re.I),
     lambda m: {"action": "move_definition", "args": {"name": m[1], "dest_file": m[2]}}),
]
_SPLIT = re.compile(r"\s*(?:;|\n|,?\s+then\s+|,?\s+and\s+then\s+)\s*", re.I)
PLAN_INSTRUCTION = (
    "You plan code edits. Reply with only a JSON list of steps, each {\"action\": ..., \"args\": {...}}. "
    "Actions: rename_symbol(old, new); add_parameter(function, parameter, default?, argument?); "
    "move_definition(name, dest_file); str_replace(path, old, new); insert(path, line, text); create(path, text)."
)


@dataclass
class Plan:
    steps: list[PlanStep]
    source: str  # "script" | "rules" | "model"

    def to_dict(self) -> dict:
        return {"source": self.source, "steps": [
            {"action": s.action, "args": dict(s.args), "files": list(s.files), "symbols": list(s.symbols)}
            for s in self.steps]}

    def __str__(self) -> str:
        return "\n".join([f"plan ({self.source}):"] + [f"  {n}. {s}" for n, s in enumerate(self.steps, 1)])


def parse_rules(task: str) -> list[dict] | None:
    """Steps for a task made only of plain refactoring requests, else None."""
    steps = []
    for clause in filter(None, _SPLIT.split(task.strip().rstrip("."))):
        for pattern, build in _RULES:
            match = pattern.match(clause.strip().rstrip("."))
            if match:
                steps.append(build(match))
                break
        else:
            return None
    return steps or None


def scripted(task: str) -> list[dict] | None:
    """A JSON plan given inline or as a file path, else None."""
    text = task.strip()
    if text.endswith(".json") and Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8")
    if not text.startswith("["):
        return None
    try:
        steps = json.loads(text)
    except json.JSONDecodeError as exc:
        raise L2MError(f"the plan is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not all(isinstance(s, dict) for s in steps):
        raise L2MError("a plan is a JSON list of {\"action\", \"args\"} objects")
    return steps


def from_model_reply(reply: str) -> list[dict] | None:
    """The first JSON list in a model's reply, if it is a list of steps."""
    found = first_json(reply, "[")
    steps = found[0] if found else None
    ok = isinstance(steps, list) and steps and all(isinstance(s, dict) and s.get("action") in ACTIONS for s in steps)
    return steps if ok else None


def plan_task(task: str, index: SymbolIndex, ask_model: Callable[[str, str], str] | None = None) -> Plan:
    """The checked plan for `task`; `ask_model(instruction, task)` is the model reading memory."""
    if not task.strip():
        raise L2MError("the task is empty")
    for source, steps in (("script", scripted(task)), ("rules", parse_rules(task))):
        if steps is not None:
            return Plan(make_plan(index, steps), source)
    reply = ask_model(PLAN_INSTRUCTION, task) if ask_model else ""
    steps = from_model_reply(reply)
    if steps is None:
        raise L2MError("could not turn the task into a plan (the model gave no valid JSON plan); try "
                       "'rename X to Y', 'add parameter P=DEFAULT to F', 'move X to FILE.py', or a JSON plan")
    return Plan(make_plan(index, steps), "model")
