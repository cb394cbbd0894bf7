"""Turning an edit task into a plan of tool steps (`tools.plan`): a small model plans, the tools execute.

Three sources, each named in the result so the user sees where a plan came from:
1. a scripted plan: the task is a JSON list of `{"action", "args"}` steps (or a file holding one);
2. rules: plain refactoring requests ("rename X to Y", "add parameter P=D to F", "move X to FILE"),
   several joined by "then" or ";";
3. the model, for each request the rules do not read (a plan made of both is "rules+model"; a clause after a
   bare ";" that names nothing new is read with the one before it). It only chooses, in small steps, among
   what `agent.choices.StepOptions` allows: first the action, among those whose arguments the index and the
   request can fill, by how likely the model finds the request after a description of each (the "noisy
   channel" reading) plus how likely it finds the action's name after the request (asked only that way, the
   135M default model answered "rename" for nearly everything; the channel alone took "f should be called
   g" for a new parameter g); then each argument in turn, among the allowed values, by the
   likelihood of each value written out whole (`l2m_core.scoring`). Only what cannot be listed is written,
   under a grammar (`l2m_core.grammar`): a docstring, a default the request does not spell, a new name it
   does not spell. The plan is checked like any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agent.choices import EDIT_WORDS, STOP_WORDS, StepOptions, after_verb
from agent.schemas import IDENTIFIER, LITERAL, PY_PATH, SENTENCE, Vocabulary, words
from l2m_core.errors import L2MError
from tools.plan import PlanStep, make_plan
from tools.refactor import parameters
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
SUBJECTS = ("old", "function", "name")  # the argument naming the symbol a step edits
PRONOUNS = ("it", "this", "that")
_SPLIT = re.compile(r"\s*(?:;\s*(?:and\s+)?(?:then\s+)?|\n|,?\s+(?:and\s+)?then\s+)\s*", re.I)
# Worked examples the model reads before a request (none is a benchmark request): (request, action, arguments).
EXAMPLES = (
    ("call load_data read_data instead", "rename_symbol", {"old": "load_data", "new": "read_data"}),
    ("let parse take a strict flag, off by default", "add_parameter",
     {"function": "parse", "parameter": "strict", "default": "False"}),
    ("retries in fetch should default to 5", "set_default",
     {"function": "fetch", "parameter": "retries", "default": "5"}),
    ("put Config in app/config.py", "move_definition", {"name": "Config", "dest_file": "app/config.py"}),
    ("explain in a docstring that run starts the server", "add_docstring",
     {"function": "run", "docstring": "Start the server."}),
    ("Session is a poor name, use Connection", "rename_symbol", {"old": "Session", "new": "Connection"}),
    ("the default timeout of connect should be 30", "set_default",
     {"function": "connect", "parameter": "timeout", "default": "30"}),
    ('give render an argument color with default "red"', "add_parameter",
     {"function": "render", "parameter": "color", "default": '"red"'}),
    ("document what parse_args returns", "add_docstring",
     {"function": "parse_args", "docstring": "The parsed options."}),
    ("relocate the helper clamp into utils/math.py", "move_definition",
     {"name": "clamp", "dest_file": "utils/math.py"}),
)
WRITTEN = {"new": IDENTIFIER, "parameter": IDENTIFIER, "default": LITERAL, "dest_file": PY_PATH,
           "docstring": SENTENCE}  # the grammar of each argument the model may have to write
ACTION_WORDS = {"rename_symbol": "rename", "add_parameter": "add parameter", "set_default": "set default",
                "move_definition": "move", "add_docstring": "docstring"}
FIELDS = {  # each action's arguments in the order they are chosen, with the label the model reads
    "rename_symbol": (("old", "Name"), ("new", "New name")),
    "add_parameter": (("function", "Function"), ("parameter", "Parameter"), ("default", "Default")),
    "set_default": (("function", "Function"), ("parameter", "Parameter"), ("default", "Default")),
    "move_definition": (("name", "Name"), ("dest_file", "Destination")),
    "add_docstring": (("function", "Function"), ("docstring", "Docstring")),
}
PREAMBLE = ("Each request asks for one edit of Python code: rename (give a function or class a new name), add "
            "parameter (a new parameter), set default (change the default value of an existing parameter), move "
            "(move a definition to another file), docstring (document a function or class).\n\n")
WRITE_INSTRUCTION = "You plan a code edit for this request: {action} {target}. Reply with JSON giving the {what}."
# (instruction, request, JSON schema of the reply) -> (the reply, its tokens' text and the model's log-probability)
AskModel = Callable[[str, str, dict], tuple[str, list[tuple[str, float]]]]
# (prompt, options) -> the model's log-probability of each option written after the prompt
ScoreOptions = Callable[[str, Sequence[str]], list[float]]


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


def requests_of(task: str, symbols: Sequence[str]) -> list[str]:
    """The task's clauses, where a clause after a bare ";" (no "then") that names neither a symbol nor a word of
    an earlier clause (its verb aside) is read with the one before it: in "normalize is vague; rename it to
    clean_text" the second clause says what to do with the first's symbol."""
    joined: list[str] = []
    end = 0
    for clause in clauses(task):
        start = task.find(clause, end)
        between, end = task[end:start], start + len(clause)
        said = set(after_verb(clause))
        earlier = {w for c in joined for w in words(c) if w.lower() not in STOP_WORDS | EDIT_WORDS}
        if joined and ";" in between and not re.search(r"\bthen\b", between, re.I) \
                and not said & (set(symbols) | earlier):
            joined[-1] += f"; {clause}"
        else:
            joined.append(clause)
    return joined


def parse_rule(request: str) -> dict | None:
    """The step for one plain refactoring request ("rename X to Y", ...), else None."""
    for pattern, build in _RULES:
        match = pattern.match(request)
        if match:
            return build(match)
    return None


def after_pronouns(steps: list[dict | None]) -> list[dict | None]:
    """Rule steps whose symbol is "it" or "this", naming the symbol of the step before ("move shout to x.py,
    then rename it to yell"); `follow_renames` later gives a renamed symbol its new name."""
    out: list[dict | None] = []
    for step in steps:
        if step is not None and out and out[-1] is not None:
            before = next(v for k, v in out[-1]["args"].items() if k in SUBJECTS)
            step = {**step, "args": {k: before if k in SUBJECTS and v.lower() in PRONOUNS else v
                                     for k, v in step["args"].items()}}
        out.append(step)
    return out


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
              source: TextSource | None = None, score: ScoreOptions | None = None) -> Plan:
    """The checked plan for `task`. For requests the rules do not read: `score(prompt, options)` is the model's
    likelihood of each option, `ask_model(instruction, request, schema)` the model reading memory and decoding
    its reply against `schema`; `source` lists the repository's files."""
    if not task.strip():
        raise L2MError("the task is empty")
    steps = scripted(task)
    if steps is not None:
        return Plan(make_plan(index, steps), "script")
    if ask_model is None or source is None or score is None:
        ruled = after_pronouns([parse_rule(request) for request in clauses(task)])
        if all(ruled):
            return Plan(make_plan(index, ruled), "rules")
        raise L2MError("could not turn the task into a plan without a model; try 'rename X to Y', "
                       "'add parameter P=DEFAULT to F', 'move X to FILE.py', or a JSON plan")
    chooser = StepChooser(index, source, ask_model, score)
    requests = requests_of(task, chooser.vocab.symbols)
    ruled = after_pronouns([parse_rule(request) for request in requests])
    steps = []
    for request, rule in zip(requests, ruled, strict=True):
        steps.append(rule if rule and chooser.knows(rule) else chooser.step(request, task))
        if steps[-1]["action"] == "rename_symbol":
            chooser.renamed(steps[-1]["args"]["new"])
    by_rules = [step is rule for step, rule in zip(steps, ruled, strict=True)]
    path = "rules" if all(by_rules) else "rules+model" if any(by_rules) else "model"
    return Plan(make_plan(index, follow_renames(steps)), path)


class StepChooser:
    """One step of a plan for one request, chosen by the model among what `StepOptions` allows."""

    def __init__(self, index: SymbolIndex, source: TextSource, ask_model: AskModel, score: ScoreOptions):
        self.index, self.source, self.ask_model, self.score = index, source, ask_model, score
        self.vocab = Vocabulary.of(index, source)

    def renamed(self, new: str) -> None:
        """Let later requests name a symbol by the new name an earlier step gives it."""
        self.vocab = replace(self.vocab, symbols=(*self.vocab.symbols, new), functions=(*self.vocab.functions, new),
                             top_level=(*self.vocab.top_level, new))

    def knows(self, step: dict) -> bool:
        """Whether the symbol a rule's step names exists (one that does not, "rename the helper to X", is read
        by the model, which chooses among the symbols that do)."""
        return any(step["args"].get(key) in self.vocab.symbols for key in SUBJECTS)

    def _parameters(self, function: str) -> dict[str, str | None]:
        try:
            return parameters(self.source, self.index, function)
        except L2MError:  # not one function (a class, a name defined twice, a name a step gives): none to offer
            return {}

    def _home(self, name: str) -> str | None:
        found = self.index.find_symbol(name)
        return found[0].span.path if len(found) == 1 else None

    def step(self, request: str, task: str) -> dict:
        """For each action the options allow, the arguments the model likes best from the lists; of those steps,
        the one under which the model finds the request likeliest; then what no list holds, written."""
        options = StepOptions.of(request, task, self.vocab, self._parameters, self._home)
        actions = options.actions()
        if not actions:
            raise L2MError(f"the repository has no function or class for {request!r} to edit")
        listed = {action: self._listed(request, options, action) for action in actions}
        action = actions[0]
        if len(actions) > 1:
            channel = [self.score(f"{_examples(channel=True)}{_step_text(a, listed[a])}Request:", [f" {request}"])[0]
                       for a in actions]
            direct = self.score(f"{_examples()}Request: {request}\nEdit:", [f" {ACTION_WORDS[a]}\n" for a in actions])
            scores = [c + d for c, d in zip(channel, direct, strict=True)]
            action = actions[scores.index(max(scores))]
        args = listed[action]
        for key, _ in FIELDS[action][len(args):]:
            args[key] = self._write(request, action, key, args)
        return {"action": action, "args": args}

    def _listed(self, request: str, options: StepOptions, action: str) -> dict[str, str]:
        """The arguments of `action`, in order, that the options list, each the model's likeliest."""
        prompt = f"{_examples()}Request: {request}\n"
        args: dict[str, str] = {}
        for key, _ in FIELDS[action]:
            values = self._values(options, action, key, args)
            if not values:
                break
            args[key] = self._choose(prompt + _step_text(action, args) + f"{dict(FIELDS[action])[key]}:", values)
        return args

    @staticmethod
    def _values(options: StepOptions, action: str, key: str, args: dict[str, str]) -> list[str]:
        """The values `key` may take, given the arguments chosen before it (empty: to be written)."""
        function = args.get("function", "")
        if key in ("old",):
            return options.symbols
        if key == "new":
            return [n for n in options.new_names if n != args["old"]]
        if key == "function":
            if action == "add_docstring":
                return options.symbols
            if action == "set_default":
                return [f for f in options.functions if options.named_parameters(f)]
            return [f for f in options.functions if options.new_parameters(f)]
        if key == "parameter":
            return options.named_parameters(function) if action == "set_default" else options.new_parameters(function)
        if key == "default":
            return options.defaults(function, args["parameter"])
        if key == "docstring":
            said = options.docstrings.get(function)
            return [said] if said else []
        if key == "name":
            return options.top_level
        if key == "dest_file":
            return [p for p in options.paths if p != options.homes.get(args["name"])]
        return []

    def _choose(self, prompt: str, values: list[str]) -> str:
        if len(values) == 1:
            return values[0]
        scores = self.score(prompt, [f" {v}\n" for v in values])
        return values[scores.index(max(scores))]

    def _write(self, request: str, action: str, key: str, args: dict[str, str]) -> str:
        """A value no list holds, decoded under its grammar by the model reading memory."""
        target = ", ".join(f"{k}={v}" for k, v in args.items())
        schema = {"type": "object", "properties": {key: WRITTEN[key]}, "required": [key], "additionalProperties": False}
        instruction = WRITE_INSTRUCTION.format(action=ACTION_WORDS[action], target=target, what=key)
        reply, _ = self.ask_model(instruction, request, schema)
        try:
            return json.loads(reply)[key]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise L2MError(f"the model's {key} is not valid: {reply[:200]!r}") from None


def _step_text(action: str, args: dict[str, str]) -> str:
    return f"Edit: {ACTION_WORDS[action]}\n" + "".join(f"{label}: {args[key]}\n" for key, label in FIELDS[action]
                                                     if key in args)


def _examples(channel: bool = False) -> str:
    """The worked examples: each request then its step, or (`channel`) each step then its request."""
    shown = ((request, _step_text(action, args)) for request, action, args in EXAMPLES)
    return PREAMBLE + "".join(f"{step}Request: {request}\n\n" if channel else f"Request: {request}\n{step}\n"
                              for request, step in shown)


def follow_renames(steps: list[dict]) -> list[dict]:
    """Steps whose symbol arguments name a symbol an earlier step renamed, by its new name (the schema offers
    the names that exist before the plan, so a model names a renamed function by its old name)."""
    renamed: dict[str, str] = {}
    out = []
    for step in steps:
        args = {k: renamed.get(v, v) if k in SUBJECTS else v for k, v in step["args"].items()}
        out.append({**step, "args": args})
        if step["action"] == "rename_symbol":
            renamed[args["old"]] = args["new"]
    return out
