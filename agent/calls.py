"""How a model writes a tool call: our JSON form, or the one its family was trained on.

A chat template that renders `tools` teaches its family a wire format for calls. When the model's template
has one of the formats below, replies are decoded and parsed in that format and the tools are described in
the template's own words; otherwise in ours:

- `l2m` (ours; SmolLM2 and any template without tools): `{"tool": NAME, "arguments": {...}}` or
  `{"answer": TEXT}`;
- `hermes` (Qwen2, Qwen2.5, Qwen3, Hermes, SmolLM3): `<tool_call>\\n{"name": NAME, "arguments": {...}}\\n</tool_call>`,
  or the answer as plain text;
- `llama3` (Llama 3.1 and later): `{"name": NAME, "parameters": {...}}`, or plain text not starting with "{".

Mistral's `[TOOL_CALLS]` is a control token, not text, and is not supported yet (such a model uses ours).
Either way the reply is decoded under a grammar (`l2m_core.grammar`), so a call is valid by construction.

The template's tool descriptions go where our instruction goes (after the context, beside the question), not
into a system turn before the context: blocks in memory were written after the reading head
(`l2m_core.memory.reading_head`), and a system turn before it would change what every block is read after.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from agent.replies import Reply, parse_tool_call
from agent.schemas import ANSWER_LENGTH
from l2m_core.grammar import JSON_WHITESPACE, JsonGrammar
from l2m_core.scoring import option_logprobs


@dataclass(frozen=True)
class CallFormat:
    """A call is `open` + `{name_key: TOOL, args_key: {...}}` + `close`; ours alone answers in JSON too."""

    name: str
    open: str = ""
    close: str = ""
    name_key: str = "tool"
    args_key: str = "arguments"

    @property
    def native(self) -> bool:
        return self.name != "l2m"

    def write(self, tool: str, arguments: dict) -> str:
        """A call as a reply in this format writes it."""
        return f"{self.open}{json.dumps({self.name_key: tool, self.args_key: arguments})}{self.close}"

    def opening(self, tool: str) -> str:
        """The start of a reply that calls `tool` (what `likeliest` scores in a native format)."""
        return f'{self.open}{{"{self.name_key}": "{tool}"'

    def likeliest(self, schema: dict, context: str, model: Any, tokenizer: Any) -> dict:
        """`schema` (a `tool_call_schema`) narrowed to the one reply whose opening the model finds likeliest,
        per token, after `context`. Left to greedy decoding the choice is made by the first token alone: after
        `find_symbol` the 135M default model wrote "find" again and called `find_references`, never `view`.
        A native format's answer is plain text with no opening to score: it stays beside the chosen call, and
        the grammar's first token decides between them."""
        replies = schema["anyOf"]
        calls = [r for r in replies if "tool" in r["properties"]]
        if self.native:
            if len(calls) < 2:
                return schema
            openings = [self.opening(r["properties"]["tool"]["const"]) for r in calls]
            scores = option_logprobs(model, tokenizer, context + "Reply: ", openings, mean=True)
            best = calls[scores.index(max(scores))]
            return {"anyOf": [r for r in replies if r is best or "tool" not in r["properties"]]}
        if len(replies) < 2:
            return schema
        openings = [f'tool": "{r["properties"]["tool"]["const"]}"' if "tool" in r["properties"] else 'answer"'
                    for r in replies]
        scores = option_logprobs(model, tokenizer, context + 'Reply: {"', openings, mean=True)
        return {"anyOf": [replies[scores.index(max(scores))]]}

    def grammar(self, memory: Any, schema: dict) -> JsonGrammar:
        """A token chooser for a reply of `schema` (`agent.schemas.tool_call_schema`) in this format."""
        if not self.native:
            return JsonGrammar.for_memory(memory, schema)
        calls = [{**r, "properties": {self.name_key: r["properties"]["tool"],
                                      self.args_key: r["properties"]["arguments"]},
                  "required": [self.name_key, self.args_key]}
                 for r in schema["anyOf"] if "tool" in r["properties"]]
        alternatives, rules = [], []
        if calls:
            call = {"anyOf": calls, "x-guidance": {"whitespace_pattern": JSON_WHITESPACE}}
            alternatives.append("call")
            rules.append(f"call: {json.dumps(self.open)} %json {json.dumps(call)} {json.dumps(self.close)}"
                         if self.open else f"call: %json {json.dumps(call)}")
        if any("answer" in r["properties"] for r in schema["anyOf"]):
            first = (self.open or "{")[0]  # an answer cannot start the way a call does
            alternatives.append("ANSWER")
            rules.append(f"ANSWER: /[^{_escape(first)}](.|\\n){{0,{ANSWER_LENGTH}}}/")
        return JsonGrammar.for_memory(memory, lark="\n".join([f"start: {' | '.join(alternatives)}", *rules]))

    def parse(self, text: str, names: list[str] | None = None) -> Reply:
        """Split a reply into its answer text or its call (`agent.replies.Reply`)."""
        if not self.native:
            return parse_tool_call(text, names)
        body = text.strip()
        if not body.startswith(self.open or "{"):
            return Reply(text.strip())
        body = body[len(self.open):]
        if self.close and self.close.strip() in body:
            body = body[:body.index(self.close.strip())]
        try:
            obj = json.loads(body)
        except json.JSONDecodeError:
            return Reply("", error="the tool call is not valid JSON", attempt=body)
        if not isinstance(obj, dict) or not isinstance(obj.get(self.name_key), str):
            return Reply("", error="the tool call names no tool", attempt=body)
        name, arguments = obj[self.name_key], obj.get(self.args_key, {})
        if names is not None and name not in names:
            return Reply("", name, {}, f"unknown tool {name!r}", json.dumps(arguments))
        if not isinstance(arguments, dict):
            return Reply("", name, {}, "arguments must be a JSON object", json.dumps(arguments))
        return Reply("", name, arguments)


OURS = CallFormat("l2m")
HERMES = CallFormat("hermes", "<tool_call>\n", "\n</tool_call>", "name", "arguments")
LLAMA3 = CallFormat("llama3", "", "", "name", "parameters")


def call_format(tokenizer: Any) -> CallFormat:
    """The format the tokenizer's chat template writes tool calls in (ours when it renders no tools)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates: the one for tools, else the default
        template = template.get("tool_use") or template.get("default") or ""
    if "tools" not in template:
        return OURS
    if "<tool_call>" in template:
        return HERMES
    if "<|python_tag|>" in template or ('"parameters": ' in template and "ipython" in template):
        return LLAMA3
    return OURS


def describe_tools(tokenizer: Any, tools: list[dict]) -> str:
    """What the chat template writes about `tools` (OpenAI tool dicts): its rendering of a turn with them less
    its rendering without them, taken before the turn's text (a system turn, or the head of the user's turn)
    or, where a template writes tools after it, from there. Empty when the template renders no tools."""
    turn = [{"role": "user", "content": "\x00"}]
    plain = tokenizer.apply_chat_template(turn, tokenize=False).split("\x00")
    full = tokenizer.apply_chat_template(turn, tools=tools, tokenize=False).split("\x00")
    before = _added(full[0][::-1], plain[0][::-1])[::-1]  # the common end first: a whole turn was put in front
    return (before or _added(full[1], plain[1])).strip()


def _added(text: str, base: str) -> str:
    """`text` less its longest common start with `base`, then less its longest common end with what is left."""
    head = len(os.path.commonprefix([text, base]))
    rest, base_rest = text[head:], base[head:]
    tail = len(os.path.commonprefix([rest[::-1], base_rest[::-1]]))
    return rest[:len(rest) - tail]


def _escape(char: str) -> str:
    return "\\" + char if char in "\\^]-[/" else char
