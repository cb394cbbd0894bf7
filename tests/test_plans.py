"""Plans from plain requests: what a step may be (values from the index and the request), the model's choices
among them, the two refactorings it added (set a default, add a docstring), and plans that are valid by
construction even when a random model makes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tools_helpers import snapshot, write_repo

from agent.choices import StepOptions, code_like
from agent.planner import clauses, follow_renames, plan_task, requests_of
from agent.schemas import Vocabulary, words
from bench.plans.fixtures import write_fixture
from l2m_core.errors import L2MError
from l2m_core.grammar import ask_json
from l2m_core.loading import load_model
from l2m_core.memory import Memory
from l2m_core.scoring import option_logprobs
from l2m_core.settings import MemorySettings
from tools.edits import EditSet
from tools.plan import execute_plan, make_plan
from tools.pyindex import PythonIndex
from tools.refactor import add_docstring, parameters, set_default
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


# -- what a step may be ---------------------------------------------------------------------------

def shop_options(tmp_path, request: str, task: str | None = None) -> StepOptions:
    edits = EditSet(Workspace(write_fixture("shop", tmp_path / "shop")))
    index = PythonIndex(edits)
    vocab = Vocabulary.of(index, edits)
    return StepOptions.of(request, task or request, vocab, lambda f: parameters(edits, index, f),
                          lambda name: index.find_symbol(name)[0].span.path)


def test_the_vocabulary_sorts_symbols_by_kind(tmp_path):
    edits = EditSet(Workspace(write_fixture("shop", tmp_path / "shop")))
    vocab = Vocabulary.of(PythonIndex(edits), edits)
    assert {"compute_total", "apply_tax", "Cart", "format_price", "summary"} <= set(vocab.symbols)
    assert "Cart" not in vocab.functions and "add" in vocab.functions and "add" not in vocab.top_level


def test_parameters_lists_names_and_defaults(tmp_path):
    edits, index = staged(tmp_path, {"m.py": "def f(a, b: int = 2, *args, c='x', **kw):\n    pass\n"})
    assert parameters(edits, index, "f") == {"a": None, "b": "2", "c": "'x'"}


def test_step_options_come_from_the_index_and_the_request(tmp_path):
    options = shop_options(tmp_path, "Rename the function compute_total to total_amount everywhere")
    assert options.symbols == ["compute_total"] and options.new_names == ["total_amount"]  # code-like words first
    assert options.actions() == ["rename_symbol", "add_parameter", "add_docstring"]  # no destination, no parameter
    said = shop_options(tmp_path, "Give format_price's output a width that defaults to 10")
    assert said.new_names == ["output", "width"] and said.literals == ["10"]  # no "s", "a", "to"
    assert said.new_parameters("format_price") == said.new_names


def test_a_move_needs_a_destination_the_request_spells(tmp_path):
    assert "move_definition" not in shop_options(tmp_path, "Move format_price elsewhere").actions()
    moved = shop_options(tmp_path, "Move format_price from shop/formatting.py to shop/money.py")
    assert moved.paths == ["shop/money.py"] and "move_definition" in moved.actions()  # its own file is no target
    assert "money" not in moved.new_names and "shop" not in moved.new_names


def test_a_new_default_needs_a_parameter_the_request_names_and_a_new_value(tmp_path):
    assert "set_default" not in shop_options(tmp_path, "format_price should default to 'USD'").actions()
    options = shop_options(tmp_path, "The currency of format_price should be 'USD', not \"EUR\"")
    assert "set_default" in options.actions() and options.named_parameters("format_price") == ["currency"]
    assert options.defaults("format_price", "currency") == ["'USD'"]  # "EUR" is the default it has
    assert shop_options(tmp_path, "currency of format_price: 'EUR' not 'USD'").defaults("format_price", "currency") == [
        "'USD'"]  # however it is quoted


def test_a_parameter_is_named_by_a_word_beginning_with_it_and_a_value_may_be_said_in_words(tmp_path):
    options = shop_options(tmp_path, "Make the default currency_code of format_price a dash")
    assert options.named_parameters("format_price") == ["currency"] and options.literals == ["'-'"]
    assert shop_options(tmp_path, "Set currency of format_price to 'X', not a dash").literals == ["'X'"]  # spelled
    said = shop_options(tmp_path, "format_price should say 'USD' rather than \"EUR\" by default")
    assert said.named_parameters("format_price") == ["currency"]  # by the default value it has
    moved = shop_options(tmp_path, "Move format_price to shop/currency_tools.py")
    assert moved.named_parameters("format_price") == []  # a path's parts name no parameter


def test_a_docstring_the_request_words_itself_is_listed(tmp_path):
    said = shop_options(tmp_path, "Add a docstring to apply_tax saying that it adds the tax rate to an amount")
    assert said.docstrings == {"apply_tax": "Adds the tax rate to an amount."}
    assert shop_options(tmp_path, "Document summary: Join the prices.").docstrings == {"summary": "Join the prices."}
    assert shop_options(tmp_path, "Describe format_price with a short docstring").docstrings == {}
    assert shop_options(tmp_path, "Rename compute_total to total everywhere it is used").docstrings == {}


def test_it_in_a_literal_request_names_the_symbol_of_the_step_before(tmp_path):
    toolbox = Toolbox(write_fixture("shop", tmp_path / "shop"))
    plan = plan_task("Move format_price to shop/money.py, then rename it to show_price", toolbox.index)
    assert plan.source == "rules" and [(s.action, dict(s.args)) for s in plan.steps] == [
        ("move_definition", {"name": "format_price", "dest_file": "shop/money.py"}),
        ("rename_symbol", {"old": "format_price", "new": "show_price"})]


def test_a_literal_request_naming_no_symbol_is_read_by_the_model(tmp_path):
    toolbox = Toolbox(write_fixture("shop", tmp_path / "shop"))

    def score(prompt: str, options) -> list[float]:
        return [1.0 if "rename" in option or "compute_total" in option else 0.0 for option in options]

    plan = plan_task("rename the helper to fast_total", toolbox.index, lambda *a: ("", []), toolbox.edits, score)
    assert plan.source == "model" and [(s.action, dict(s.args)) for s in plan.steps] == [
        ("rename_symbol", {"old": "compute_total", "new": "fast_total"})]


def test_a_clause_after_a_bare_semicolon_that_names_nothing_new_is_read_with_the_one_before():
    symbols = ["normalize", "count_words", "apply_tax"]
    assert requests_of("The name normalize is vague; rename it to clean_text", symbols) == [
        "The name normalize is vague; rename it to clean_text"]
    assert requests_of("Document apply_tax and then move it into shop/tax.py", symbols) == [
        "Document apply_tax", "move it into shop/tax.py"]  # "then": a second step
    assert requests_of("Rename count_words to n_words; then document n_words: it counts", symbols) == [
        "Rename count_words to n_words", "document n_words: it counts"]
    assert requests_of("Rename count_words to n_words; document n_words", symbols) == [
        "Rename count_words to n_words", "document n_words"]  # names a word of the clause before


def test_code_like_words():
    text = "add lang=None and `verbose` to run(x)"
    assert [w for w in ("lang", "verbose", "run", "x", "add", "keep_case", "ShopCart") if code_like(w, text)] == [
        "lang", "verbose", "run", "keep_case", "ShopCart"]
    assert clauses("Rename shout to yell, then give yell a parameter times") == ["Rename shout to yell",
                                                                                "give yell a parameter times"]


def test_task_words_leave_out_python_keywords():
    assert words("Rename the class Cart to class_ if it is free") == ["Rename", "the", "Cart", "to", "class_", "it",
                                                                      "free"]


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


def test_the_model_chooses_the_action_then_each_argument_and_writes_the_rest(tmp_path):
    root = write_fixture("shop", tmp_path / "shop")
    toolbox, asked = Toolbox(root), []

    def score(prompt: str, options) -> list[float]:
        if prompt.endswith("Request:"):  # the request scored after each candidate step
            return [1.0 if prompt.endswith("Edit: docstring\nFunction: summary\nRequest:") else 0.0]
        return [1.0 if "summary" in option else 0.0 for option in options]

    def ask_model(instruction: str, text: str, schema: dict) -> tuple[str, list]:
        asked.append((instruction, schema))
        return json.dumps({"docstring": "Sum up."}), []

    plan = plan_task("Document Cart and summary", toolbox.index, ask_model, toolbox.edits, score)
    assert plan.source == "model" and [(s.action, dict(s.args)) for s in plan.steps] == [
        ("add_docstring", {"function": "summary", "docstring": "Sum up."})]
    assert len(asked) == 1 and "pattern" in asked[0][1]["properties"]["docstring"]


def test_a_request_with_no_symbol_to_edit_is_refused(tmp_path):
    toolbox = Toolbox(write_repo(tmp_path / "repo", {"README.md": "Nothing to run.\n"}))
    with pytest.raises(L2MError, match="has no function or class"):
        plan_task("Tidy things up", toolbox.index, lambda *a: ("", []), toolbox.edits, lambda p, o: [0.0] * len(o))


def test_option_scores_are_the_log_probabilities_of_each_option_after_the_prompt(tiny_model_dir):
    import torch

    lm = load_model(tiny_model_dir, device="cpu")
    prompt, options = "Request: rename a to b\nName:", [" a\n", " b_c d\n"]
    scores = option_logprobs(lm.model, lm.tokenizer, prompt, options)
    for option, got in zip(options, scores, strict=True):
        ids = lm.tokenizer(prompt, add_special_tokens=False).input_ids
        more = lm.tokenizer(option, add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(lm.model(torch.tensor([ids + more])).logits[0].float(), -1)
        want = sum(float(logprobs[len(ids) - 1 + n, t]) for n, t in enumerate(more))
        assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("task", ["Please call compute_total total_amount from now on",
                                  "Document apply_tax and then move it into shop/tax.py"])
def test_a_random_model_makes_a_valid_plan_by_construction(tiny_shop, task):
    root, memory = tiny_shop
    toolbox = Toolbox(root)

    def ask_model(instruction: str, text: str, schema: dict) -> tuple[str, list]:
        value, _, pieces = ask_json(memory, text, schema, instruction=instruction, max_new_tokens=400)
        return json.dumps(value), pieces

    def score(prompt: str, options) -> list[float]:
        return option_logprobs(memory.model, memory.tokenizer, prompt, options)

    before = snapshot(root)
    plan = plan_task(task, toolbox.index, ask_model, toolbox.edits, score)
    assert plan.source == "model" and len(plan.steps) == len(clauses(task))
    assert snapshot(root) == before  # planning writes nothing


def test_a_value_cut_off_by_the_token_limit_is_an_error_not_half_a_plan(tiny_shop):
    root, memory = tiny_shop
    toolbox = Toolbox(root)

    def ask_model(instruction: str, text: str, schema: dict) -> tuple[str, list]:
        value, _, pieces = ask_json(memory, text, schema, instruction=instruction, max_new_tokens=3)
        return json.dumps(value), pieces

    with pytest.raises(L2MError, match="cut off by the token limit"):
        plan_task("Please document apply_tax", toolbox.index, ask_model, toolbox.edits,  # a docstring step
                  lambda prompt, options: [float(prompt.endswith("docstring\nFunction: apply_tax\nRequest:"))])
