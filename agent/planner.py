"""Turning an edit task into a plan of tool steps (`tools.plan`): a small model plans, the tools execute.

Three sources, tried in order, each named in the result so the user sees where a plan came from:
1. a scripted plan: the task is a JSON list of `{"action", "args"}` steps (or a file holding one);
2. rules: plain refactoring requests ("rename X to Y", "add parameter P=D to F", "move X to FILE"),
   several joined by "then" or ";";
3. the model, reading memory: for each request of the task, the action it finds likeliest (the
   log-probability of `[{"action": "NAME"` for each of the five, decoded under `agent.schemas.action_schema`)
   is chosen, then it writes that step under a grammar (`agent.schemas.plan_schema`: arguments whose symbols
   and files come from the index and the task), so the step is valid by construction. (Letting it pick
   the action greedily, by the first token, chose add_parameter for nearly every request.) The plan is
   checked like any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.schemas import PLAN_ACTIONS, Vocabulary, action_schema, plan_schema
from l2m_core.errors import L2MError
from tools.plan import PlanStep, make_plan
from tools.symbols import SymbolIndex, TextSource

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
    "You plan code edits. Reply with a JSON list of steps, each {\"action\": ..., \"args\": {...}}, one step per "
    "requested change. Actions: rename_symbol(old, new): give a function or class a new name; "
    "add_parameter(function, parameter, default): add a new parameter; set_default(function, parameter, default): "
    "change the default value of an existing parameter; move_definition(name, dest_file): move a definition to "
    "another file; add_docstring(function, docstring): document a function or class.\n"
    "Examples: \"call load_data read_data instead\" -> "
    '[{"action": "rename_symbol", "args": {"old": "load_data", "new": "read_data"}}]; '
    '"let parse take a strict flag, off by default" -> '
    '[{"action": "add_parameter", "args": {"function": "parse", "parameter": "strict", "default": "False"}}]; '
    '"retries in fetch should default to 5" -> '
    '[{"action": "set_default", "args": {"function": "fetch", "parameter": "retries", "default": "5"}}]; '
    '"put Config in app/config.py" -> [{"action": "move_definition", "args": {"name": "Config", '
    '"dest_file": "app/config.py"}}]; "explain in a docstring that run starts the server" -> '
    '[{"action": "add_docstring", "args": {"function": "run", "docstring": "Start the server."}}]'
)
# (instruction, request, JSON schema of the reply) -> (the reply, its tokens' text and the model's log-probability)
AskModel = Callable[[str, str, dict], tuple[str, list[tuple[str, float]]]]


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


def clauses(task: str) -> list[str]:
    """The requests of a task joined by "then" or ";" (each is at most one step of a plan)."""
    return [c.strip().rstrip(".") for c in _SPLIT.split(task.strip().rstrip(".")) if c.strip()]


def parse_rules(task: str) -> list[dict] | None:
    """Steps for a task made only of plain refactoring requests, else None."""
    steps = []
    for clause in clauses(task):
        for pattern, build in _RULES:
            match = pattern.match(clause)
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


def plan_task(task: str, index: SymbolIndex, ask_model: AskModel | None = None,
              source: TextSource | None = None) -> Plan:
    """The checked plan for `task`. `ask_model(instruction, request, schema)` is the model reading memory,
    decoding its reply against `schema` and scoring it; `source` lists the repository's files (for the schema)."""
    if not task.strip():
        raise L2MError("the task is empty")
    for kind, steps in (("script", scripted(task)), ("rules", parse_rules(task))):
        if steps is not None:
            return Plan(make_plan(index, steps), kind)
    if ask_model is None or source is None:
        raise L2MError("could not turn the task into a plan without a model; try 'rename X to Y', "
                       "'add parameter P=DEFAULT to F', 'move X to FILE.py', or a JSON plan")
    vocab, steps = Vocabulary.of(index, source), []
    for request in clauses(task):
        scores = {action: choice_score(ask_model(PLAN_INSTRUCTION, request, action_schema(action))[1], action)
                  for action in PLAN_ACTIONS}
        reply, _ = ask_model(PLAN_INSTRUCTION, request, plan_schema(request, vocab, max(scores, key=scores.get), task))
        try:
            steps += json.loads(reply)
        except json.JSONDecodeError:
            raise L2MError(f"the model's plan is not valid JSON: {reply[:200]!r}") from None
    return Plan(make_plan(index, follow_renames(steps)), "model")


def choice_score(pieces: list[tuple[str, float]], action: str) -> float:
    """How much the model wanted `action`: the log-probability of the reply's tokens up to the action's name
    (the rest is the arguments, which a fluent free-text docstring would win on)."""
    text, total = "", 0.0
    for piece, logprob in pieces:
        text, total = text + piece, total + logprob
        if f'"{action}"' in text:
            break
    return total


def follow_renames(steps: list[dict]) -> list[dict]:
    """Steps whose symbol arguments name a symbol an earlier step renamed, by its new name (the schema offers
    the names that exist before the plan, so a model names a renamed function by its old name)."""
    renamed: dict[str, str] = {}
    out = []
    for step in steps:
        args = {k: renamed.get(v, v) if k in ("old", "function", "name") else v for k, v in step["args"].items()}
        out.append({**step, "args": args})
        if step["action"] == "rename_symbol":
            renamed[args["old"]] = args["new"]
    return out
