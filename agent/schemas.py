"""JSON schemas the model's replies are decoded against (`l2m_core.grammar`), narrowed by the index.

What the index can decide is not left to the model: a tool call's symbol argument is an enum of the symbols
that exist (those the turn names, when it names some), a file argument an enum of the repository's files,
a tool name one of the offered tools. The patterns here are the grammars of what a plan's step must write
(`agent.planner`). The model's job is then only to choose.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.utils.function_calling import convert_to_openai_tool

from l2m_core.errors import L2MError
from tools.symbols import SymbolIndex, TextSource

IDENTIFIER = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,39}$"}
PY_PATH = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_/]{0,60}\.py$"}
LITERAL = {"type": "string",
           "pattern": r"""^(-?[0-9]{1,9}(\.[0-9]{1,6})?|"[^"\\]{0,24}"|'[^'\\]{0,24}'|True|False|None)$"""}
SENTENCE = {"type": "string", "pattern": r"""^[A-Z][^"\\\n]{2,100}$"""}
ANSWER_LENGTH = 400
MAX_STRING, MAX_INTEGER, MAX_ITEMS = 200, 10**9, 16
_VALUES = ("default", "const", "enum", "examples")  # keys whose values are data, not schemas
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Vocabulary:
    """What the index knows, for enums: files, all symbols, functions and methods, top-level definitions."""

    files: tuple[str, ...]
    symbols: tuple[str, ...]
    functions: tuple[str, ...]
    top_level: tuple[str, ...]

    @classmethod
    def of(cls, index: SymbolIndex, source: TextSource) -> Vocabulary:
        files = tuple(sorted(source.list_files()))
        found = [s for path in files if path.endswith(".py") for s in _outline(index, path)]
        return cls(files, _unique(s.name for s in found),
                   _unique(s.name for s in found if s.kind in ("function", "method")),
                   _unique(s.name for s in found if s.parent is None))


def _outline(index: SymbolIndex, path: str) -> list:
    try:
        return index.outline(path)
    except L2MError:  # a file the index cannot read has no symbols to offer
        return []


def _unique(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def words(text: str) -> list[str]:
    """The identifier-like words of `text` (Python keywords aside), once each, in order."""
    return [w for w in dict.fromkeys(_WORD.findall(text)) if not keyword.iskeyword(w)]


def mentioned(text: str, names: Sequence[str]) -> list[str]:
    """The `names` that `text` spells (whole words; paths as substrings), in `names`' order."""
    said = set(words(text))
    return [n for n in names if n in said or ("/" in n and n in text)]


def _object(properties: dict, required: Sequence[str]) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def tool_parameters(method: Callable[..., Any]) -> dict:
    """The JSON schema of a tool's arguments, from its typed signature."""
    return convert_to_openai_tool(method)["function"]["parameters"]


def narrow(parameters: dict, choices: Mapping[str, Sequence[str]]) -> dict:
    """`parameters` with each string property named in `choices` turned into an enum of its values."""
    properties = dict(parameters.get("properties", {}))
    for name, values in choices.items():
        if name in properties and properties[name].get("type") == "string" and values:
            properties[name] = {"enum": list(values)}
    return {**parameters, "properties": properties, "additionalProperties": False}


def bounded(schema: Any) -> Any:
    """`schema` with a size limit on every unbounded string, integer and array, so that a greedy model cannot
    decode forever inside one value (a random model writes digits until the token limit)."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in _VALUES else bounded(v) for k, v in schema.items()}
    for key in ("properties", "$defs"):  # maps of names to schemas (a property may be called "default")
        if isinstance(schema.get(key), dict):
            out[key] = {name: bounded(v) for name, v in schema[key].items()}
    kind = schema.get("type")
    if kind == "string" and not {"enum", "const", "pattern", "maxLength"} & set(schema):
        out["maxLength"] = MAX_STRING
    elif kind == "integer":
        out.setdefault("minimum", -MAX_INTEGER)
        out.setdefault("maximum", MAX_INTEGER)
    elif kind == "array":
        out.setdefault("maxItems", MAX_ITEMS)
    return out


def tool_call_schema(tools: Mapping[str, dict], answer: bool = True, only: str | None = None) -> dict:
    """A reply that calls one of `tools` (name -> arguments schema), or, when `answer`, answers in text.
    `only`: the one tool that must be called. Values are `bounded`."""
    calls = [_object({"tool": {"const": name}, "arguments": bounded(parameters)}, ["tool", "arguments"])
             for name, parameters in tools.items() if only in (None, name)]
    if answer:
        calls.append(_object({"answer": {"type": "string", "maxLength": ANSWER_LENGTH}}, ["answer"]))
    return {"anyOf": calls}
