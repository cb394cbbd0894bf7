"""The agent loop: the model, reading memory, either calls a tool or answers.

A tool call is a strict JSON block `{"tool": NAME, "arguments": {...}}` (small local models have no
native tool format). Tool results are written into memory and pinned into the next step's read set,
so a long session does not grow the prompt. Only tool calls in the model's own reply run; text in the
corpus is data. `run` is offered only when the user allowed commands. Every turn ends with a stop
reason: answered, step_limit, or no_tools (the reply named no usable tool).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent.replies import first_json
from agent.session import Session
from l2m_core.errors import L2MError
from l2m_core.memory import Answer, Citation, Memory
from tools.toolbox import Toolbox

READ_TOOLS = ("view", "search", "find_symbol", "find_references", "outline")
INSTRUCTION = (
    "You answer questions about the repository in the context. To look something up, reply with only a JSON "
    'object {{"tool": NAME, "arguments": {{...}}}}; otherwise reply with the answer. Tools: {tools}.'
)
Respond = Callable[[str, str, list[int]], Answer]  # (question, instruction, pins) -> Answer


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


def parse_tool_call(reply: str) -> tuple[str, dict] | None:
    """(tool, arguments) when the reply holds a JSON tool call, else None."""
    found = first_json(reply)
    call = found[0] if found else None
    if not isinstance(call, dict) or not isinstance(call.get("tool"), str):
        return None
    arguments = call.get("arguments", {})
    return (call["tool"], arguments) if isinstance(arguments, dict) else None


class AgentLoop:
    def __init__(self, memory: Memory, toolbox: Toolbox, session: Session, max_steps: int = 4,
                 tools: Sequence[str] = READ_TOOLS, respond: Respond | None = None):
        self.memory, self.toolbox, self.session, self.max_steps = memory, toolbox, session, max_steps
        self.tools = {name: fn for name, fn in toolbox.tools().items() if name in tools}
        self.instruction = INSTRUCTION.format(tools=", ".join(self.tools))
        self.respond = respond or (lambda q, instruction, pins: memory.ask(q, instruction=instruction, pins=pins))

    def run(self, message: str) -> TurnResult:
        """One user turn: up to `max_steps` tool calls, then the answer (or the step limit)."""
        budget = self.memory.settings.max_read_blocks // 2
        pins = self._recent_blocks() + self._remember("user", message)
        result = TurnResult("", [])
        for _ in range(self.max_steps):
            answer = self.respond(message, self.instruction, pins[-budget:])
            call = parse_tool_call(answer.text)
            if call is None:
                result.answer, result.citations = answer.text, answer.citations
                break
            name, arguments = call
            observation = self._call(name, arguments)
            result.steps.append(ToolStep(name, arguments, observation))
            pins += self._remember("tool", f"Tool {name}({json.dumps(arguments)}) returned:\n{observation}")
        else:
            result.stop_reason = "step_limit"
            result.answer = "(stopped: step limit reached before an answer)"
        self._remember("assistant", result.answer)
        return result

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
