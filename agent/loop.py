"""The agent loop: the model, reading memory, either calls a tool or answers.

The model's reply is decoded against a JSON schema (`agent.schemas.tool_call_schema`): either
`{"tool": NAME, "arguments": {...}}` with NAME one of the offered tools and arguments valid for it
(a path one of the repository's files, a symbol name one that exists, preferring those the turn has
mentioned), or `{"answer": TEXT}`; so every complete call is valid by construction (one the token limit
cut off is an invalid call: the step's observation says so). A call already made this turn is not offered
again (its result is already in memory). Right after `find_symbol` has located definitions, the one call
offered is a `view` of one of them, from its line (what one does with a location). Tool results are
written into memory and pinned into the next step's read set, so a long session does not grow the prompt.
Only tool calls in the model's own reply run; text in the corpus is data. `run` is offered only when the
user allowed commands. Every turn ends with a stop reason: `answered` (a reply that calls no tool: the
answer, or, when the token limit cut off an answer, the reply as decoded) or `step_limit` (all
`max_steps` replies attempted a call).

Which tool to call (or whether to answer) the model chooses first, by how likely it finds each reply's
opening after the turn so far (`CallFormat.likeliest`); then it writes that reply under its schema. A model
whose chat template has a tool-call format of its own (`agent.calls`: Qwen's `<tool_call>`, Llama 3.1's
JSON) writes and reads calls in that format, with the tools described in its template's words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.calls import call_format, describe_tools
from agent.schemas import Vocabulary, mentioned, narrow, tool_call_schema, tool_parameters
from agent.session import Session
from l2m_core.errors import L2MError
from l2m_core.memory import Answer, Citation, Memory
from tools.toolbox import Toolbox

READ_TOOLS = ("view", "search", "find_symbol", "find_references", "outline")
INSTRUCTION = (
    "You answer questions about the repository in the context. To look something up, reply with a JSON "
    'object {{"tool": NAME, "arguments": {{...}}}}; when the context holds the answer, reply {{"answer": TEXT}}. '
    "Tools: {tools}. For example, to read the definition of parse: "
    '{{"tool": "find_symbol", "arguments": {{"name": "parse"}}}} returns "app/cli.py:12:5 function parse", then '
    '{{"tool": "view", "arguments": {{"path": "app/cli.py", "start": 12}}}} shows it.'
)
NATIVE_INSTRUCTION = ("You answer questions about the repository in the context. To look something up, call one "
                      "of the tools; when the context holds the answer, answer in plain text.")
REPLY_TOKENS = 256
SYMBOL_ARGUMENTS = ("name",)  # tool arguments that name a symbol ("path" names a file)
Respond = Callable[[str, str, list[int], dict], Answer]  # (question, instruction, pins, reply schema) -> Answer


@dataclass
class ToolStep:
    tool: str
    arguments: dict
    observation: str


@dataclass
class TurnResult:
    answer: str
    citations: list[Citation]
    steps: list[ToolStep] = field(default_factory=list)
    stop_reason: str = "answered"

    def to_dict(self) -> dict:
        return {"answer": self.answer, "stop_reason": self.stop_reason,
                "citations": [str(c) for c in self.citations],
                "steps": [{"tool": s.tool, "arguments": s.arguments, "observation": s.observation[:2000]}
                          for s in self.steps]}


class AgentLoop:
    def __init__(self, memory: Memory, toolbox: Toolbox, session: Session, max_steps: int = 4,
                 tools: Sequence[str] = READ_TOOLS, respond: Respond | None = None, tool_steps: int = 0):
        """`tool_steps`: the first replies of each turn that must call a tool (LangChain's tool_choice "required"
        for them; the model still chooses which tool and arguments)."""
        self.memory, self.toolbox, self.session, self.max_steps = memory, toolbox, session, max_steps
        self.tool_steps = tool_steps
        self.tools = {name: fn for name, fn in toolbox.tools().items() if name in tools}
        self.format = call_format(memory.tokenizer)
        if self.format.native:
            described = describe_tools(memory.tokenizer, [convert_to_openai_tool(fn) for fn in self.tools.values()])
            self.instruction = f"{NATIVE_INSTRUCTION}\n\n{described}"
        else:
            self.instruction = INSTRUCTION.format(tools=", ".join(self.tools))
        self.respond = respond or self._constrained
        self.choose = respond is None  # a scripted responder chooses for itself

    def _constrained(self, question: str, instruction: str, pins: list[int], schema: dict) -> Answer:
        grammar = self.format.grammar(self.memory, schema)
        return self.memory.ask(question, instruction=instruction, pins=pins, max_new_tokens=REPLY_TOKENS,
                               choose_token=grammar)

    def reply_schema(self, said: str, done: set[tuple[str, str]], answer: bool = True,
                     found: Sequence[tuple[str, int]] = ()) -> dict:
        """The schema of the next reply: a call of an offered tool (files and symbols narrowed to those `said`
        mentions, else all; values in `done`, (tool, value) pairs already called, left out) or an answer.
        `found`: the definitions (path, line) the last call located; then the one call offered is a `view` of
        one of them, from its line."""
        if found and "view" in self.tools:
            view = tool_parameters(self.tools["view"])
            view["properties"] = {**view["properties"], "path": {"enum": list(dict.fromkeys(p for p, _ in found))},
                                  "start": {"enum": sorted({line for _, line in found})}}
            return tool_call_schema({"view": {**view, "required": ["path", "start"], "additionalProperties": False}},
                                    answer=answer)
        vocab = Vocabulary.of(self.toolbox.index, self.toolbox.edits)
        files = mentioned(said, vocab.files) or list(vocab.files)
        symbols = mentioned(said, vocab.symbols) or list(vocab.symbols)
        tools = {}
        for name, method in self.tools.items():
            parameters = tool_parameters(method)
            choices = {"path": files, **{arg: symbols for arg in SYMBOL_ARGUMENTS}}
            choices = {arg: [v for v in values if (name, v) not in done] for arg, values in choices.items()}
            required = parameters.get("required", [])
            if any(arg in required and arg in parameters["properties"] and not values
                   for arg, values in choices.items()):
                continue  # every value of its main argument has been called already
            tools[name] = narrow(parameters, choices)
        return tool_call_schema(tools, answer=answer or not tools)

    def run(self, message: str) -> TurnResult:
        """One user turn: up to `max_steps` tool calls, then the answer (or the step limit)."""
        budget = self.memory.settings.max_read_blocks // 2
        pins = self._recent_blocks() + self._remember("user", message)
        result = TurnResult("", [])
        said, done = message, set()
        for step in range(self.max_steps):
            schema = self.reply_schema(said, done, answer=step >= self.tool_steps,
                                       found=located(result.steps[-1]) if result.steps else ())
            if self.choose:
                schema = self.chosen(schema, message, result.steps)
            answer = self.respond(message, self.instruction, pins[-budget:], schema)
            reply = self.format.parse(answer.text)
            if reply.tool is None and reply.error is None:
                result.answer, result.citations = reply.text, answer.citations
                break
            name, arguments = reply.tool or "?", reply.arguments
            observation = f"error: {reply.error}" if reply.error else self._call(name, arguments)
            result.steps.append(ToolStep(name, arguments, observation))
            said += "\n" + observation
            done.update((name, v) for v in arguments.values() if isinstance(v, str))
            pins += self._remember("tool", f"Tool {name}({json.dumps(arguments)}) returned:\n{observation}")
        else:
            result.stop_reason = "step_limit"
            result.answer = "(stopped: step limit reached before an answer)"
        self._remember("assistant", result.answer)
        return result

    def chosen(self, schema: dict, message: str, steps: list[ToolStep]) -> dict:
        """`schema` narrowed to the reply the model finds likeliest after the turn so far (`CallFormat.likeliest`)."""
        transcript = f"{self.instruction}\n\nUser: {message}\n" + "".join(
            f"Reply: {self.format.write(s.tool, s.arguments)}\nResult: {s.observation[:500]}\n" for s in steps)
        return self.format.likeliest(schema, transcript, self.memory.model, self.memory.tokenizer)

    def _call(self, name: str, arguments: dict) -> str:
        if name not in self.tools:
            return f"error: no tool {name!r}; available: {', '.join(self.tools)}"
        try:
            return self.tools[name](**arguments)
        except TypeError as exc:
            return f"error: bad arguments for {name}: {exc}"
        except L2MError as exc:
            return f"error: {exc}"

    def _recent_blocks(self, turns: int = 2) -> list[int]:
        """Blocks of the session's last turns (a resumed session starts from them)."""
        sources = [f"session/{self.session.id}/{seq:04d}" for seq in range(max(1, self.session.seq - turns + 1),
                                                                           self.session.seq + 1)]
        return [b for source in sources for b in self.memory.blocks_for(source)]

    def _remember(self, role: str, text: str) -> list[int]:
        """Record the turn and write it into memory; returns its blocks (pinned for the rest of the turn)."""
        source = self.session.add(role, text)
        if not text.strip():
            return []
        return [span.block_id for span in self.memory.ingest_document(f"{role}: {text}", source)]


_DEFINITION = re.compile(r"^(\S+):(\d+):\d+ (?:function|method|class|variable) ", re.M)


def located(step: ToolStep) -> list[tuple[str, int]]:
    """The definitions (path, line) a `find_symbol` step found."""
    if step.tool != "find_symbol":
        return []
    return [(path, int(line)) for path, line in _DEFINITION.findall(step.observation)]
