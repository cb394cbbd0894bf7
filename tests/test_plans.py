"""Plans from plain requests: the schema the model decodes against (enums from the index and the task), the
two refactorings it added (set a default, add a docstring), and plans that are valid by construction
even when a random model writes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tools_helpers import snapshot, write_repo

from agent.planner import choice_score, clauses, follow_renames, plan_task
from agent.schemas import PLAN_ACTIONS, Vocabulary, plan_schema, words
from bench.plans.fixtures import write_fixture
from l2m_core.errors import L2MError
from l2m_core.grammar import ask_json
from l2m_core.loading import load_model
from l2m_core.memory import Memory
from l2m_core.settings import MemorySettings
from tools.edits import EditSet
from tools.plan import execute_plan, make_plan
from tools.pyindex import PythonIndex
from tools.refactor import add_docstring, set_default
from tools.run import RunPolicy
from tools.toolbox import Toolbox
from tools.workspace import Workspace

REQUESTS = json.loads((Path(__file__).parents[1] / "bench" / "plans" / "requests.json").read_text())


def staged(tmp_path, files: dict[str, str]) -> tuple[EditSet, PythonIndex]:
    edits = EditSet(Workspace(write_repo(tmp_path / "repo", files)))
    return edits, PythonIndex(edits)


# -- the two refactorings ------------------------------------------------------------------------

@pytest.mark.parametrize("source, parameter, expected", [
    ("def f(a, b=1):\n    pass\n", "b", "def f(a, b=2):\n    pass\n"),
    ("def f(a, b: int = 1):\n    pass\n", "b", "def f(a, b: int = 2):\n    pass\n"),
    ("def f(a, b):\n    pass\n", "b", "def f(a, b=2):\n    pass\n"),
    ("def f(a: int, *, b=1):\n    pass\n", "a", "def f(a: int = 2, *, b=1):\n    pass\n"),
])
def test_set_default(tmp_path, source, parameter, expected):
    edits, index = staged(tmp_path, {"m.py": source})
    set_default(edits, index, "f", parameter, "2")
    assert edits.read_text("m.py") == expected


@pytest.mark.parametrize("source, parameter, message", [
    ("def f(a, b):\n    pass\n", "c", "no parameter c"),
    ("def f(a, b):\n    pass\n", "a", "would not compile"),
    ("def f(*args):\n    pass\n", "args", "no parameter args"),
])
def test_set_default_refuses(tmp_path, source, parameter, message):
    edits, index = staged(tmp_path, {"m.py": source})
    with pytest.raises(L2MError, match=message):
        set_default(edits, index, "f", parameter, "2")
    assert edits.read_text("m.py") == source


def test_add_docstring_to_a_function_and_a_method(tmp_path):
    edits, index = staged(tmp_path, {"m.py": "class C:\n    def go(self):\n        return 1\n"})
    add_docstring(edits, index, "go", 'Go on "now"\n   please.')
    add_docstring(edits, index, "C", "A thing.")
    assert edits.read_text("m.py") == ('class C:\n    """A thing."""\n    def go(self):\n'
                                       '        """Go on "now" please."""\n        return 1\n')


def test_add_docstring_refuses_a_second_one(tmp_path):
    edits, index = staged(tmp_path, {"m.py": 'def f():\n    """Here."""\n'})
    with pytest.raises(L2MError, match="already has a docstring"):
        add_docstring(edits, index, "f", "Again.")


# -- the schema ----------------------------------------------------------------------------------

def shop_vocabulary(tmp_path) -> Vocabulary:
    edits = EditSet(Workspace(write_fixture("shop", tmp_path / "shop")))
    return Vocabulary.of(PythonIndex(edits), edits)


def step_args(schema: dict) -> dict:
    return schema["items"]["properties"]["args"]["properties"]


def test_plan_schema_takes_names_from_the_index_and_the_task(tmp_path):
    vocab = shop_vocabulary(tmp_path)
    assert {"compute_total", "apply_tax", "Cart", "format_price", "summary"} <= set(vocab.symbols)
    assert "Cart" not in vocab.functions and "add" in vocab.functions and "add" not in vocab.top_level
    task = "Rename the function compute_total to total_amount everywhere it is defined and used"
    rename = plan_schema(task, vocab, "rename_symbol")
    assert rename["maxItems"] == 1 and rename["items"]["properties"]["action"] == {"const": "rename_symbol"}
    args = step_args(rename)
    assert args["old"] == {"enum": ["compute_total"]}  # the one existing symbol the task names
    assert "total_amount" in args["new"]["enum"] and "compute_total" not in args["new"]["enum"]
    assert "pattern" in step_args(plan_schema(task, vocab, "add_parameter"))["default"]  # no literal: any literal
    moved = step_args(plan_schema("Move format_price into shop/money.py", vocab, "move_definition"))
    assert moved["dest_file"] == {"enum": ["shop/money.py"]} and moved["name"] == {"enum": ["format_price"]}
    assert step_args(plan_schema("set it to 'x' or 0.5", vocab, "set_default"))["default"] == {"enum": ["'x'", "0.5"]}
    second = step_args(plan_schema("then give it a parameter sep", vocab, "add_parameter", "Rename summary ..."))
    assert second["function"] == {"enum": ["summary"]}  # names come from the whole task
    assert clauses("Rename shout to yell, then give yell a parameter times") == ["Rename shout to yell",
                                                                                "give yell a parameter times"]


def test_task_words_leave_out_python_keywords():
    assert words("Rename the class Cart to class_ if it is free") == ["Rename", "the", "Cart", "to", "class_", "it",
                                                                      "free"]


def test_the_choice_score_counts_the_tokens_up_to_the_action_name():
    pieces = [('[{"', -0.5), ('action": "', -0.25), ("rename", -2.0), ('_symbol"', -1.0), (', "args"', -9.0)]
    assert choice_score(pieces, "rename_symbol") == -3.75


def test_later_steps_follow_an_earlier_rename():
    steps = [{"action": "rename_symbol", "args": {"old": "shout", "new": "yell"}},
             {"action": "add_parameter", "args": {"function": "shout", "parameter": "times", "default": "1"}}]
    assert follow_renames(steps)[1]["args"]["function"] == "yell"


# -- plans -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_id", ["shop-param-1", "shop-default-2", "shop-move-2", "text-doc-1",
                                        "text-multi-1"])
def test_the_benchmark_expected_plans_keep_the_fixture_tests_green(tmp_path, request_id):
    request = next(r for r in REQUESTS if r["id"] == request_id)
    root = write_fixture(request["fixture"], tmp_path / "repo")
    toolbox = Toolbox(root, policy=RunPolicy(allow=True))
    steps = [{**s, "args": {"docstring": "Some words.", **s["args"]} if s["action"] == "add_docstring" else s["args"]}
             for s in request["expected"]]
    execute_plan(toolbox.edits, make_plan(toolbox.index, steps))
    assert toolbox.apply([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]).ok


@pytest.fixture(scope="module")
def tiny_shop(tiny_model_dir, tmp_path_factory):
    root = write_fixture("shop", tmp_path_factory.mktemp("plans") / "shop")
    memory = Memory.create(root / ".l2m", load_model(tiny_model_dir, device="cpu"),
                           MemorySettings(block_size=16, chunk_size=32, sink=16, local=32, hot_budget_mb=4))
    memory.ingest_document((root / "shop" / "pricing.py").read_text(), "shop/pricing.py")
    yield root, memory
    memory.close()


@pytest.mark.parametrize("task", ["Please call compute_total total_amount from now on",
                                  "Document apply_tax and then move it into shop/tax.py"])
def test_a_random_model_writes_a_valid_plan_by_construction(tiny_shop, task):
    root, memory = tiny_shop
    toolbox = Toolbox(root)
    candidates = []

    def ask_model(instruction: str, text: str, schema: dict) -> tuple[str, list]:
        plan, _, pieces = ask_json(memory, text, schema, instruction=instruction, max_new_tokens=400)
        candidates.append((choice_score(pieces, plan[0]["action"]), plan))
        return json.dumps(plan), pieces

    before = snapshot(root)
    plan = plan_task(task, toolbox.index, ask_model, toolbox.edits)
    assert plan.source == "model" and len(plan.steps) == len(clauses(task))
    assert len(candidates) == 6 * len(clauses(task))  # per request: each action scored, then the step written
    assert [c[1] for c in candidates[:5]] == [[{"action": a}] for a in PLAN_ACTIONS]
    best = max(candidates[:5], key=lambda c: c[0])[1]
    assert plan.steps[0].action == candidates[5][1][0]["action"] == best[0]["action"]
    assert snapshot(root) == before  # planning writes nothing


def test_a_plan_cut_off_by_the_token_limit_is_an_error_not_half_a_plan(tiny_shop):
    root, memory = tiny_shop
    toolbox = Toolbox(root)

    def ask_model(instruction: str, text: str, schema: dict) -> tuple[str, list]:
        plan, _, pieces = ask_json(memory, text, schema, instruction=instruction, max_new_tokens=5)
        return json.dumps(plan), pieces

    with pytest.raises(L2MError, match="cut off by the token limit"):
        plan_task("Please call compute_total total_amount", toolbox.index, ask_model, toolbox.edits)
