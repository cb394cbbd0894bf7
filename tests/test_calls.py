"""Tool calls in a model family's own format (agent/calls.py): detected from the chat template, described in
the template's words, decoded under a grammar in that format by a random tiny model, parsed back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from langchain_core.tools import tool

from agent.calls import HERMES, LLAMA3, OURS, call_format, describe_tools
from agent.langchain import L2MChatModel
from agent.loop import READ_TOOLS, AgentLoop
from agent.session import Session
from l2m_core.loading import load_model
from l2m_core.memory import Memory, reading_head
from l2m_core.settings import MemorySettings
from l2m_core.tiny import CHAT_TEMPLATE
from tools.toolbox import Toolbox

# The tiny models' template with a tools section in front of it, as Qwen2.5's and Llama 3.1's templates write
# tools (abridged); without tools both render exactly as the tiny template does, so the reading head is the same.
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n\nYou may call one or more functions.\n\n<tools>"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools>\n\nFor each function call, return a json "
    "object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n{%- endif %}'
    + CHAT_TEMPLATE)
LLAMA3_TEMPLATE = (
    "{%- if tools %}Given the following functions, respond with a JSON for a function call in the format "
    '{"name": function name, "parameters": dictionary of argument name and its value}.'
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n\n{%- endif %}"
    "{%- if false %}<|python_tag|>Environment: ipython{%- endif %}" + CHAT_TEMPLATE)
FIXTURE = Path(__file__).parent / "fixtures" / "python"
SETTINGS = MemorySettings(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, hot_budget_mb=4)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def tiny_with(template: str, tiny_model_dir: Path):
    lm = load_model(tiny_model_dir, device="cpu")
    lm.tokenizer.chat_template = template
    return lm


@pytest.mark.parametrize("template, expected", [(CHAT_TEMPLATE, OURS), (HERMES_TEMPLATE, HERMES),
                                                (LLAMA3_TEMPLATE, LLAMA3)])
def test_the_format_comes_from_the_chat_template_and_leaves_the_reading_head_as_it_was(
        tiny_model_dir, template, expected):
    lm = tiny_with(template, tiny_model_dir)
    assert call_format(lm.tokenizer) == expected
    assert reading_head(lm.tokenizer) == reading_head(tiny_with(CHAT_TEMPLATE, tiny_model_dir).tokenizer)


def test_the_template_describes_the_tools_in_its_own_words(tiny_model_dir):
    tokenizer = tiny_with(HERMES_TEMPLATE, tiny_model_dir).tokenizer
    described = describe_tools(tokenizer, [{"type": "function", "function": {"name": "add", "parameters": {}}}])
    assert described.startswith("<|im_start|>system\n# Tools") and '"name": "add"' in described
    assert "<tool_call>" in described and "\x00" not in described and "<|im_start|>user" not in described
    assert describe_tools(tiny_with(CHAT_TEMPLATE, tiny_model_dir).tokenizer, []) == ""


@pytest.mark.parametrize("fmt", [OURS, HERMES, LLAMA3])
def test_a_written_call_parses_back_and_plain_text_is_the_answer(fmt):
    reply = fmt.parse(fmt.write("view", {"path": "a.py", "start": 3}), ["view"])
    assert (reply.tool, reply.arguments, reply.error) == ("view", {"path": "a.py", "start": 3}, None)
    assert fmt.parse(fmt.write("rm", {}), ["view"]).error == "unknown tool 'rm'"
    if fmt.native:
        assert fmt.parse("It is in room 14.").text == "It is in room 14."
        assert "not valid JSON" in fmt.parse(fmt.open + '{"name": "view", "argu').error


@pytest.mark.parametrize("template, opening, arguments", [(HERMES_TEMPLATE, "<tool_call>\n{", '"arguments"'),
                                                         (LLAMA3_TEMPLATE, "{", '"parameters"')])
def test_bound_tools_make_a_random_model_write_a_valid_call_in_its_format(tiny_model_dir, tmp_path, monkeypatch,
                                                                          template, opening, arguments):
    memory = Memory.create(tmp_path / "store", tiny_with(template, tiny_model_dir), SETTINGS)
    memory.ingest_document("The cherry lamp is kept in room 14.\n", "doc.txt")
    texts, real_ask = [], memory.ask

    def ask(*args, **kwargs):
        texts.append(answer := real_ask(*args, **kwargs))
        return answer

    monkeypatch.setattr(memory, "ask", ask)
    reply = L2MChatModel(memory=memory, max_tokens=96).bind_tools([add], tool_choice="any").invoke("What is 1 + 2?")
    memory.close()
    assert texts[0].text.startswith(opening) and arguments in texts[0].text
    [call] = reply.tool_calls
    assert call["name"] == "add" and not reply.invalid_tool_calls
    assert set(call["args"]) == {"a", "b"} and all(isinstance(v, int) for v in call["args"].values())


def test_the_agent_loop_offers_tools_in_the_template_s_words_and_calls_them_in_its_format(tiny_model_dir, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(FIXTURE, root)
    memory = Memory.create(root / ".l2m", tiny_with(HERMES_TEMPLATE, tiny_model_dir), SETTINGS)
    loop = AgentLoop(memory, Toolbox(root), Session.open(memory.files.engine), max_steps=3)
    assert "<tools>" in loop.instruction and '"name": "find_symbol"' in loop.instruction
    turn = loop.run("Where is Square?")
    memory.close()
    assert turn.steps or turn.stop_reason == "answered"
    for step in turn.steps:
        assert step.tool in READ_TOOLS and not step.observation.startswith("error: bad arguments")
