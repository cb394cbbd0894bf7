"""Reading a model's reply: the one parser of tool calls.

A constrained reply (`l2m_core.grammar`) is exactly `{"tool": NAME, "arguments": {...}}` or
`{"answer": TEXT}`; a free-text reply (a scripted responder, an unconstrained model) may wrap the call
in prose or a code fence. `parse_tool_call` reads both, for the agent loop and the LangChain model alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_FENCE = re.compile(r"```(?:json)?")


@dataclass(frozen=True)
class Reply:
    """A reply split into its text and the tool call it makes, if any.

    `text`: the reply less the call (the answer when there is no call). `tool`/`arguments`: the call.
    `error`: why an attempted call is not valid (then `tool` is the name as written, or None, and
    `attempt` the call's text).
    """

    text: str
    tool: str | None = None
    arguments: dict = field(default_factory=dict)
    error: str | None = None
    attempt: str = ""

    @property
    def is_call(self) -> bool:
        return self.tool is not None and self.error is None


def parse_tool_call(text: str, names: Sequence[str] | None = None) -> Reply:
    """Split `text` into a `Reply`. The first JSON object with a "tool" key is the call: valid when "arguments"
    (default {}) is an object and the tool is one of `names` (None: any name). Text that starts a call but is
    not valid JSON (a reply cut off by the token limit) is an invalid call. `{"answer": TEXT}` is an answer."""
    start = text.find("{")
    if start < 0:
        return Reply(text)
    try:
        obj, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        if '"tool"' not in text[start:]:
            return Reply(text)
        return Reply(_rest(text[:start]), error="the tool call is not valid JSON", attempt=text[start:])
    if isinstance(obj, dict) and set(obj) == {"answer"} and isinstance(obj["answer"], str):
        return Reply(obj["answer"].strip())
    if not isinstance(obj, dict) or "tool" not in obj:
        return Reply(text)
    rest, name, args = _rest(text[:start] + text[end:]), obj["tool"], obj.get("arguments", {})
    name = name if isinstance(name, str) else None
    if name is not None and (names is None or name in names) and isinstance(args, dict):
        return Reply(rest, name, args)
    error = "arguments must be a JSON object" if name is not None and (names is None or name in names) \
        else f"unknown tool {obj['tool']!r}"
    return Reply(rest, name, {}, error, json.dumps(args))


def _rest(text: str) -> str:
    return _FENCE.sub("", text).strip()
