"""LangChain components over an L2M memory: a chat model, a retriever, and the repository tools.

    from agent import Agent
    from agent.langchain import L2MChatModel, L2MRetriever, l2m_tools

    agent = Agent.open("path/to/repo")
    chat = L2MChatModel.from_agent(agent)            # the model reads the memory while it answers
    docs = L2MRetriever.from_agent(agent, k=4).invoke("retry policy")   # the passages it would read
    tools = l2m_tools(Toolbox(agent.root, ...))      # view, search, find_symbol, str_replace, ...

The chat model does not paste retrieved text into a prompt: the last human message is the question
and `Memory.ask` attends to the stored blocks; each answer's `response_metadata["citations"]` says
which passages it read, weighted by attention mass. Tool calls are decoded under a grammar: with tools
bound, the model first chooses the reply (which tool, or an answer) by the likelihood of each reply's
opening (`CallFormat.likeliest`, as the agent loop does); then the reply is constrained
(`l2m_core.grammar`) to one JSON object `{"tool": name, "arguments": {...}}` whose name is that tool and
whose arguments fit its schema, or `{"answer": text}` (never when `tool_choice` demands a call), or to
the same call in the model family's own format when its chat template has one (`agent.calls`); the call
becomes `AIMessage.tool_calls`, parsed from that output by the format's parser, never from free text.
A reply cut off by `max_tokens` before the call is complete becomes `invalid_tool_calls`.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Self

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, InvalidToolCall, SystemMessage, ToolCall
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool, ToolException, create_schema_from_function
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.calls import OURS, CallFormat, call_format, describe_tools
from agent.core import Agent
from agent.names import name_pins
from agent.replies import Reply
from agent.schemas import tool_call_schema
from l2m_core.errors import L2MError
from l2m_core.memory import Citation, Memory
from repos_index.index import CorpusIndex
from tools.toolbox import Toolbox

_ROLES = {"human": "User", "ai": "Assistant", "system": "System", "tool": "Tool result"}


class _ReadsMemory(BaseModel):
    """What both components hold: the memory, and optionally the corpus index for pinning named symbols."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: Memory = Field(exclude=True)
    index: CorpusIndex | None = Field(default=None, exclude=True)

    @classmethod
    def from_agent(cls, agent: Agent, **kwargs: Any) -> Self:
        """Read `agent`'s memory; symbols and sections a question names are pinned as `Agent.ask` does."""
        return cls(memory=agent.memory, index=agent.index, **kwargs)

    def _pins(self, question: str) -> list[int]:
        if self.index is None:
            return []
        return name_pins(self.index, question, self.memory.settings.max_read_blocks // 2, self.memory.lexical)


def citation_metadata(citation: Citation) -> dict[str, Any]:
    """A citation as JSON-friendly provenance: source, line span, enclosing symbol or section, page and heading
    path (where the source is a PDF, HTML or DOCX document), attention weight, block ids."""
    return {"source": citation.source, "line_start": citation.line_start, "line_end": citation.line_end,
            "label": citation.label, "page": citation.page, "heading": citation.heading, "weight": citation.weight,
            "block_ids": list(citation.block_ids)}


# ---- chat model --------------------------------------------------------------------------------------


class L2MChatModel(_ReadsMemory, BaseChatModel):
    """A chat model whose answers read the L2M memory (greedy decoding; no sampling).

    The last human message is the question; system messages, `instruction` and the earlier turns go into
    the instruction the model reads beside the question, after the memory (the memory's own reading
    instruction always comes before it); tool calls and results after the question follow it. `stop`
    sequences cut the answer where they first occur.
    """

    instruction: str = ""
    max_tokens: int = Field(default=128, ge=1)
    temperature: float = 0.0
    stop: list[str] | None = None
    hops: int = Field(default=1, ge=1)

    @field_validator("temperature")
    @classmethod
    def _greedy_only(cls, value: float) -> float:
        if value != 0:
            raise ValueError("the L2M decodes greedily: temperature must be 0")
        return value

    @property
    def _llm_type(self) -> str:
        return "l2m"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.memory.lm.name, "store": str(self.memory.files.path),
                "max_tokens": self.max_tokens, "hops": self.hops}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(ls_provider="l2m", ls_model_type="chat", ls_temperature=self.temperature,
                                 ls_model_name=model if isinstance(model, str) else self.memory.lm.name,
                                 ls_max_tokens=kwargs.get("max_tokens", self.max_tokens))
        if stops := self._stops(stop):
            params["ls_stop"] = stops
        return params

    def _stops(self, stop: list[str] | None) -> list[str]:
        """The model's stop sequences and the call's, together."""
        return [*(self.stop or []), *(stop or [])]

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | BaseTool], *,
                   tool_choice: str | bool | dict | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer `tools` (any form `convert_to_openai_tool` takes). `tool_choice`: None or "auto" (call a tool
        or answer), "any"/"required"/True (call one), or a tool's name (call that one). The choice is an
        constraint on the decoding: with "any" or a name the reply cannot be plain text."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        return self.bind(tools=formatted, tool_choice=_tool_choice(tool_choice, names), **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, *, tools: list[dict] | None = None,
                  tool_choice: str | None = None, **kwargs: Any) -> ChatResult:
        calls_in = call_format(self.memory.tokenizer)
        question, instruction, pin_query = self._prompt(messages, tools or [], tool_choice, calls_in)
        names = [t["function"]["name"] for t in tools or []]
        grammar = None
        if tools:
            schema = tool_call_schema({t["function"]["name"]: t["function"].get("parameters", {}) for t in tools},
                                      answer=tool_choice is None, only=None if tool_choice == "any" else tool_choice)
            schema = calls_in.likeliest(schema, f"{instruction}\n\nUser: {question}\n", self.memory.model,
                                        self.memory.tokenizer)
            grammar = calls_in.grammar(self.memory, schema)
        answer = self.memory.ask(question, instruction=instruction, pins=self._pins(pin_query), hops=self.hops,
                                 max_new_tokens=kwargs.get("max_tokens", self.max_tokens), choose_token=grammar)
        text = cut_at_stop(answer.text, self._stops(stop)) if not tools else answer.text
        content, calls, invalid = message_parts(calls_in.parse(text, names)) if tools else (text, [], [])
        message = AIMessage(content=content, tool_calls=calls, invalid_tool_calls=invalid, response_metadata={
            "model_name": self.memory.lm.name, "citations": [citation_metadata(c) for c in answer.citations],
            "lexical_blocks": answer.lexical, "timings": answer.timings})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _prompt(self, messages: list[BaseMessage], tools: list[dict], tool_choice: str | None,
                calls_in: CallFormat = OURS) -> tuple[str, str, str]:
        """(question, instruction, the human question alone for name pins); tool calls written `calls_in`."""
        humans = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage)]
        if not humans:
            raise L2MError("the conversation has no human message to answer")
        last = humans[-1]
        asked = messages[last].text
        system = [m.text for m in messages[:last] if isinstance(m, SystemMessage)]
        history = [_transcript_line(m, calls_in) for m in messages[:last] if not isinstance(m, SystemMessage)]
        parts = [*system, self.instruction]
        if history:
            parts.append("Conversation so far:\n" + "\n".join(history))
        if tools:
            parts.append(tool_instruction(tools, tool_choice, calls_in, self.memory.tokenizer))
        after = [_transcript_line(m, calls_in) for m in messages[last + 1:]]
        question = "\n".join([asked, *after])
        return question, "\n\n".join(p for p in parts if p.strip()), asked


def _tool_choice(choice: str | bool | dict | None, names: list[str]) -> str | None:
    """Normalise LangChain's tool_choice forms to None (free), "any" (some tool) or one tool's name."""
    if isinstance(choice, dict):
        choice = choice.get("function", {}).get("name") or choice.get("name")
    if choice in (None, False, "auto"):
        return None
    if choice in (True, "any", "required"):
        return "any"
    if choice in names:
        return choice
    raise ValueError(f"tool_choice {choice!r} is neither auto, any, required nor a bound tool ({', '.join(names)})")


def tool_instruction(tools: list[dict], tool_choice: str | None = None, calls_in: CallFormat = OURS,
                     tokenizer: Any = None) -> str:
    """The instruction offering `tools` (OpenAI tool dicts) and saying how to call one: in the chat template's
    own words when `calls_in` is its native format."""
    if calls_in.native:
        demand = {None: "", "any": "Call one of these tools."}.get(tool_choice, f"Call the tool {tool_choice}.")
        return "\n\n".join(p for p in (describe_tools(tokenizer, tools), demand) if p)
    lines = ["Tools you can call:"]
    for tool in tools:
        fn = tool["function"]
        description = " ".join(fn.get("description", "").split())
        lines.append(f"- {fn['name']}: {description} Arguments (JSON schema): {json.dumps(fn.get('parameters', {}))}")
    call = '{"tool": "<name>", "arguments": {...}}'
    if tool_choice is None:
        lines.append(f"To call a tool, reply with only one JSON object {call}; otherwise answer in plain text.")
    elif tool_choice == "any":
        lines.append(f"Call one of these tools: reply with only one JSON object {call}.")
    else:
        lines.append(f'Call the tool {tool_choice}: reply with only one JSON object '
                     f'{{"tool": "{tool_choice}", "arguments": {{...}}}}.')
    return "\n".join(lines)


def _transcript_line(message: BaseMessage, calls_in: CallFormat = OURS) -> str:
    """One earlier message as a line of the transcript; tool calls in the form the model is asked for."""
    role = _ROLES.get(message.type, getattr(message, "role", message.type))
    if isinstance(message, AIMessage) and message.tool_calls:
        calls = [calls_in.write(c["name"], c["args"]) for c in message.tool_calls]
        return "\n".join(f"{role}: {text}" for text in [message.text, *calls] if text)
    label = f"{role} ({message.name})" if message.type == "tool" and message.name else role
    return f"{label}: {message.text}"


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the earliest occurrence of any stop sequence."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(cuts)] if cuts else text


def message_parts(reply: Reply) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """A parsed reply as an `AIMessage`'s (content, tool calls, invalid tool calls)."""
    if reply.error:
        return reply.text, [], [invalid_tool_call(name=reply.tool, args=reply.attempt, id=_call_id(),
                                                  error=reply.error)]
    if reply.tool is not None:
        return reply.text, [tool_call(name=reply.tool, args=reply.arguments, id=_call_id())], []
    return reply.text, [], []


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


# ---- retriever ---------------------------------------------------------------------------------------


class L2MRetriever(_ReadsMemory, BaseRetriever):
    """The passages the model reads for a query, as `Document`s, heaviest first.

    The read set is the one `Memory.ask` would attend to (pins, lexical matches and their neighbours,
    plus each layer's own picks), found by running the read without decoding. One Document per citation:
    a run of consecutive blocks of one source, whose text is the blocks' text joined, with metadata
    source, line_start, line_end, label, page and heading (PDF, HTML and DOCX sources), weight (share of the
    attention mass on memory) and block_ids.
    """

    k: int = Field(default=4, ge=1)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None) -> list[Document]:
        answer = self.memory.ask(query, max_new_tokens=0, pins=self._pins(query))
        cited = answer.citations[:k or self.k]
        texts = self.memory.block_texts([b for c in cited for b in c.block_ids])
        return [Document(page_content="".join(texts[b] for b in c.block_ids), metadata=citation_metadata(c))
                for c in cited]


# ---- tools -------------------------------------------------------------------------------------------


def l2m_tools(toolbox: Toolbox) -> list[BaseTool]:
    """Each of the toolbox's tools as a `StructuredTool`: its name, its docstring as the description and
    an argument schema from its signature. A tool's `L2MError` becomes the tool's result (an error
    `ToolMessage` when invoked with a tool call), so a model sees what went wrong instead of the run failing."""
    return [_structured_tool(name, method) for name, method in toolbox.tools().items()]


def _structured_tool(name: str, method: Callable[..., str]) -> StructuredTool:
    def call(**kwargs: Any) -> str:
        try:
            return method(**kwargs)
        except L2MError as exc:
            raise ToolException(str(exc)) from exc

    return StructuredTool(name=name, description=inspect.getdoc(method) or name, func=call,
                          args_schema=create_schema_from_function(name, method), handle_tool_error=True)
