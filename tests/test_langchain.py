"""LangChain components on a tiny model: the chat model reads memory, the retriever returns what it reads,
the tools keep their contracts. Most generation that must be JSON is scripted; with tools bound, the random
model itself writes valid calls (grammar-constrained decoding). The memory read is always the real one."""

from __future__ import annotations

import inspect

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_tests.integration_tests import RetrieversIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, ValidationError

from agent.core import Agent
from agent.langchain import L2MChatModel, L2MRetriever, cut_at_stop, l2m_tools, message_parts
from agent.replies import parse_tool_call
from l2m_core.errors import L2MError
from l2m_core.loading import LoadedModel, load_model
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings
from tools.toolbox import TOOL_NAMES, Toolbox

FRUITS = ["apple", "banana", "cherry", "damson", "elder", "fig"]
DOCS = {f"doc{i}.txt": f"The {w} lamp number {i} glows.\nIt is kept in room {i * 7}.\n" for i, w in enumerate(FRUITS)}
QUESTION = "Which room keeps the cherry lamp?"
SETTINGS = MemorySettings(block_size=16, chunk_size=32, sink=16, local=32, max_read_blocks=6, hot_budget_mb=4)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def memory(tiny, tmp_path_factory) -> Memory:
    mem = Memory.create(tmp_path_factory.mktemp("langchain") / "store", tiny, SETTINGS)
    for source, text in DOCS.items():
        mem.ingest_document(text, source)
    yield mem
    mem.close()


@pytest.fixture
def scripted(memory, monkeypatch):
    """Make `memory.ask` reply `script["text"]` after the real read (no decoding); record every call."""
    script, calls, real_ask = {"text": ""}, [], memory.ask

    def ask(question, instruction=None, max_new_tokens=64, pins=(), hops=1, choose_token=None):
        calls.append({"question": question, "instruction": instruction, "max_new_tokens": max_new_tokens,
                      "pins": list(pins), "hops": hops, "choose_token": choose_token})
        answer = real_ask(question, instruction=instruction, max_new_tokens=0, pins=pins)
        answer.text = script["text"]
        return answer

    monkeypatch.setattr(memory, "ask", ask)
    return script, calls


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Person(BaseModel):
    """A person."""

    name: str
    age: int


def assert_cites_stored_blocks(citations: list[dict], memory: Memory) -> None:
    assert citations
    for c in citations:
        metas = [memory.meta[b] for b in c["block_ids"]]
        assert {m.source for m in metas} == {c["source"]}
        assert (metas[0].line_start, metas[-1].line_end) == (c["line_start"], c["line_end"])
    assert sum(c["weight"] for c in citations) == pytest.approx(1.0)


# ---- chat model ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tools", [[], [add]])
def test_answer_reads_memory_and_cites_what_it_read(memory, tools):
    chat = L2MChatModel(memory=memory, max_tokens=4)
    reply = (chat.bind_tools(tools) if tools else chat).invoke(QUESTION)
    assert isinstance(reply, AIMessage) and isinstance(reply.content, str)
    citations = reply.response_metadata["citations"]
    assert_cites_stored_blocks(citations, memory)
    assert "doc2.txt" in {c["source"] for c in citations}, "the block naming the cherry lamp was not read"


def test_messages_become_instruction_and_question(memory, scripted):
    script, calls = scripted
    script["text"] = "Room 14."
    chat = L2MChatModel(memory=memory, max_tokens=7, hops=2)
    reply = chat.invoke([SystemMessage("You are terse."), HumanMessage("Is the fig lamp on?"),
                         AIMessage("It glows."), HumanMessage(QUESTION)])
    assert reply.content == "Room 14." and not reply.tool_calls
    call = calls[0]
    assert call["question"] == QUESTION
    assert (call["max_new_tokens"], call["hops"]) == (7, 2)
    instruction = call["instruction"]
    assert instruction.index("You are terse.") < instruction.index("User: Is the fig lamp on?")
    assert "User: Is the fig lamp on?\nAssistant: It glows." in instruction
    assert QUESTION not in instruction
    chat.invoke(QUESTION, max_tokens=3)
    assert calls[1]["max_new_tokens"] == 3


def test_tool_exchange_after_the_question_follows_it(memory, scripted):
    _, calls = scripted
    call = {"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1"}
    L2MChatModel(memory=memory).bind_tools([add]).invoke(
        [HumanMessage("What is 1 + 2?"), AIMessage("", tool_calls=[call]),
         ToolMessage("3", tool_call_id="call_1", name="add")])
    assert calls[0]["question"] == ('What is 1 + 2?\nAssistant: {"tool": "add", "arguments": {"a": 1, "b": 2}}\n'
                                    "Tool result (add): 3")


def test_a_conversation_without_a_human_message_is_refused(memory):
    with pytest.raises(L2MError, match="no human message"):
        L2MChatModel(memory=memory).invoke([SystemMessage("You are terse.")])


def test_only_greedy_decoding_is_accepted(memory):
    with pytest.raises(ValidationError, match="temperature must be 0"):
        L2MChatModel(memory=memory, temperature=0.7)


def test_stop_sequences_from_the_model_and_the_call_both_cut(memory, scripted):
    script, _ = scripted
    script["text"] = "alpha STOP beta END gamma"
    chat = L2MChatModel(memory=memory, stop=["END"])
    assert chat.invoke(QUESTION).content == "alpha STOP beta "
    assert chat.invoke(QUESTION, stop=["STOP"]).content == "alpha "
    assert chat._get_ls_params(stop=["STOP"])["ls_stop"] == ["END", "STOP"]


def test_cut_at_stop_uses_the_earliest_match():
    assert cut_at_stop("a;b.c", [".", ";"]) == "a"
    assert cut_at_stop("abc", ["", "x"]) == "abc"


def test_a_json_reply_becomes_a_tool_call_with_citations(memory, scripted):
    script, calls = scripted
    script["text"] = '{"tool": "add", "arguments": {"a": 1, "b": 2}}'
    reply = L2MChatModel(memory=memory).bind_tools([add]).invoke("What is 1 + 2?")
    assert reply.content == "" and not reply.invalid_tool_calls
    [call] = reply.tool_calls
    assert (call["name"], call["args"]) == ("add", {"a": 1, "b": 2}) and call["id"].startswith("call_")
    assert reply.response_metadata["citations"]
    instruction = calls[0]["instruction"]
    assert "- add: Add two integers." in instruction and '"required": ["a", "b"]' in instruction
    assert "otherwise answer in plain text" in instruction


@pytest.mark.parametrize("choice", ["any", "add"])
def test_bound_tools_constrain_even_a_random_model_to_a_valid_call(memory, choice):
    reply = L2MChatModel(memory=memory, max_tokens=96).bind_tools([add], tool_choice=choice).invoke(QUESTION)
    [call] = reply.tool_calls
    assert call["name"] == "add" and not reply.invalid_tool_calls
    assert set(call["args"]) == {"a", "b"} and all(isinstance(v, int) for v in call["args"].values())


@pytest.mark.parametrize("likeliest", ["add", "answer"])
def test_with_tools_bound_the_model_first_chooses_a_call_or_the_answer(memory, monkeypatch, likeliest):
    def scores(model, tokenizer, prompt, options, mean=False):
        assert prompt.endswith('Reply: {"') and "What is 1 + 2?" in prompt
        return [1.0 if likeliest in option else 0.0 for option in options]

    monkeypatch.setattr("agent.calls.option_logprobs", scores)
    reply = L2MChatModel(memory=memory, max_tokens=96).bind_tools([add]).invoke("What is 1 + 2?")
    assert [c["name"] for c in reply.tool_calls] == (["add"] if likeliest == "add" else [])
    assert not reply.invalid_tool_calls


@pytest.mark.parametrize("choice, expected", [
    ("any", "Call one of these tools"), ("required", "Call one of these tools"),
    ({"type": "function", "function": {"name": "add"}}, 'Call the tool add: reply with only one JSON object'),
])
def test_tool_choice_is_stated_in_the_instruction(memory, scripted, choice, expected):
    _, calls = scripted
    L2MChatModel(memory=memory).bind_tools([add], tool_choice=choice).invoke("What is 1 + 2?")
    assert expected in calls[0]["instruction"]


def test_an_unknown_tool_choice_is_refused(memory):
    with pytest.raises(ValueError, match="tool_choice 'mul'"):
        L2MChatModel(memory=memory).bind_tools([add], tool_choice="mul")


def test_structured_output_parses_the_scripted_call(memory, scripted):
    script, _ = scripted
    script["text"] = '{"tool": "Person", "arguments": {"name": "Ada", "age": 36}}'
    structured = L2MChatModel(memory=memory).with_structured_output(Person)
    assert structured.invoke("Who wrote the first program?") == Person(name="Ada", age=36)


@pytest.mark.parametrize("text, content, call, error", [
    ('Sure.\n```json\n{"tool": "add", "arguments": {"a": 2, "b": 5}}\n```', "Sure.", ("add", {"a": 2, "b": 5}), None),
    ('{"tool": "add"}', "", ("add", {}), None),
    ('{"tool": "mul", "arguments": {"a": 2}}', "", None, "unknown tool 'mul'"),
    ('{"tool": "add", "arguments": [1, 2]}', "", None, "arguments must be a JSON object"),
    ('I will call {"tool": "add", "argu', "I will call", None, "not valid JSON"),
    ("Use {x} as the placeholder.", "Use {x} as the placeholder.", None, None),
    ('{"answer": 3}', '{"answer": 3}', None, None),
    ("Room 14.", "Room 14.", None, None),
])
def test_parse_tool_call(text, content, call, error):
    rest, calls, invalid = message_parts(parse_tool_call(text, ["add"]))
    assert rest == content
    assert [(c["name"], c["args"]) for c in calls] == ([call] if call else [])
    assert len(invalid) == bool(error) and all(error in i["error"] for i in invalid)


def test_a_constrained_answer_is_its_text():
    assert message_parts(parse_tool_call('{"answer": "Room 14."}', ["add"])) == ("Room 14.", [], [])


def test_without_bound_tools_json_is_just_text(memory, scripted):
    script, calls = scripted
    script["text"] = '{"tool": "add", "arguments": {}}'
    reply = L2MChatModel(memory=memory).invoke("What is 1 + 2?")
    assert reply.content == script["text"] and not reply.tool_calls and not reply.invalid_tool_calls
    assert calls[0]["choose_token"] is None  # no tools: plain greedy decoding


# ---- retriever -----------------------------------------------------------------------------------


def test_retriever_returns_the_read_passages_with_provenance(memory):
    docs = L2MRetriever(memory=memory, k=20).invoke("cherry lamp room")
    assert docs and any("cherry" in d.page_content for d in docs)
    cited = memory.ask("cherry lamp room", max_new_tokens=0).citations  # the same ranking: addressing, then mass
    assert [d.metadata["block_ids"] for d in docs] == [list(c.block_ids) for c in cited]
    assert sum(d.metadata["weight"] for d in docs) == pytest.approx(1.0)
    for d in docs:
        metas = [memory.meta[b] for b in d.metadata["block_ids"]]
        assert d.page_content == DOCS[d.metadata["source"]][metas[0].char_start:metas[-1].char_end]
        assert (d.metadata["line_start"], d.metadata["line_end"]) == (metas[0].line_start, metas[-1].line_end)


def test_retriever_k_from_the_constructor_and_the_call(memory):
    retriever = L2MRetriever(memory=memory, k=1)
    assert len(retriever.invoke(QUESTION)) == 1
    assert len(retriever.invoke(QUESTION, k=2)) == 2


def test_from_agent_pins_the_symbol_a_question_names(tiny, tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "zoo.py").write_text("class Zebra:\n    stripes = 40\n\n\ndef feed(animal):\n    return animal\n")
    (root / "farm.py").write_text("def milk(cow):\n    return cow.udder\n")
    with Agent.open(root, model=tiny, settings=SETTINGS) as agent:
        agent.ingest()
        named = set(agent.index.find_symbol("Zebra")[0].blocks[:2])
        pins, real_ask = [], agent.memory.ask

        def spy(question, **kwargs):
            pins.append(set(kwargs["pins"]))
            return real_ask(question, **kwargs)

        monkeypatch.setattr(agent.memory, "ask", spy)
        docs = L2MRetriever.from_agent(agent, k=10).invoke("where is class Zebra defined?")
        L2MChatModel.from_agent(agent, max_tokens=1).invoke("where is class Zebra defined?")
    assert named and len(pins) == 2 and all(named <= p for p in pins)
    assert named <= {b for d in docs for b in d.metadata["block_ids"]}


# ---- tools ---------------------------------------------------------------------------------------


@pytest.fixture
def toolbox(tmp_path) -> Toolbox:
    (tmp_path / "a.py").write_text("x = 1\ny = 2\n")
    return Toolbox(tmp_path)


def test_tools_keep_names_contracts_and_signatures(toolbox):
    tools = l2m_tools(toolbox)
    assert [t.name for t in tools] == list(TOOL_NAMES)
    methods = toolbox.tools()
    for t in tools:
        assert t.description == inspect.getdoc(methods[t.name])
        params = inspect.signature(methods[t.name]).parameters
        assert set(t.args) == set(params)
        schema = t.tool_call_schema.model_json_schema()
        assert set(schema.get("required", [])) == {n for n, p in params.items() if p.default is p.empty}


def test_tools_run_and_share_the_toolbox_state(toolbox):
    tools = {t.name: t for t in l2m_tools(toolbox)}
    assert "2" in tools["view"].invoke({"path": "a.py", "start": 2, "end": 2})
    tools["str_replace"].invoke({"path": "a.py", "old_str": "y = 2", "new_str": "y = 3"})
    assert "+y = 3" in tools["diff"].invoke({})


def test_a_tool_error_becomes_its_result(toolbox):
    view = {t.name: t for t in l2m_tools(toolbox)}["view"]
    assert "outside the repository" in view.invoke({"path": "/etc/passwd"})
    message = view.invoke({"type": "tool_call", "id": "c1", "name": "view", "args": {"path": "../x"}})
    assert isinstance(message, ToolMessage) and message.status == "error" and "'..'" in message.content


# ---- standard LangChain tests --------------------------------------------------------------------


class TestL2MChatModelStandard(ChatModelUnitTests):
    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _memory(cls, memory):
        cls.store = memory

    @property
    def chat_model_class(self) -> type[L2MChatModel]:
        return L2MChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"memory": self.store}


class TestL2MRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _memory(cls, memory):
        cls.store = memory

    @property
    def retriever_constructor(self) -> type[L2MRetriever]:
        return L2MRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"memory": self.store}

    @property
    def retriever_query_example(self) -> str:
        return QUESTION

    # pytest-asyncio runs in strict mode here (no asyncio_mode in pyproject): the standard async test needs
    # the mark to run. The mark is added to the standard function itself, so it is not an override.
    test_ainvoke_returns_documents = pytest.mark.asyncio(RetrieversIntegrationTests.test_ainvoke_returns_documents)


# ---- the real default model ----------------------------------------------------------------------


@pytest.mark.model
def test_default_model_answers_from_memory_and_cites_the_line(default_model, tmp_path):
    """About ten blocks in the store, four read: the answer needs addressing to find the passkey's block."""
    filler = "".join(f"Note {i}: the archive shelf {i} holds old letters about the harbour.\n" for i in range(20))
    with Memory.create(tmp_path / "store", default_model, MemorySettings(max_read_blocks=4)) as mem:
        mem.ingest_document(filler + "The vault passkey is 48213.\n" + filler, "notes.txt")
        assert len(mem.meta) > 8
        reply = L2MChatModel(memory=mem, max_tokens=16).invoke("What is the vault passkey?")
    assert "48213" in reply.content
    assert any(c["source"] == "notes.txt" and c["line_start"] <= 21 <= c["line_end"]
               for c in reply.response_metadata["citations"])
