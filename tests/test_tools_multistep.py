"""The scripted multi-step edit on the fixture repository: plan, stage, diff, apply, test, undo; and the Toolbox."""

from __future__ import annotations

import shutil
import sys

import pytest
from tools_helpers import EDIT_REPO, snapshot

from l2m_core.errors import L2MError
from tools.apply import apply_and_test
from tools.edits import EditSet
from tools.plan import execute_plan, make_plan
from tools.pyindex import PythonIndex
from tools.run import RunPolicy
from tools.toolbox import TOOL_NAMES, Toolbox
from tools.workspace import Workspace

FIXTURE_TESTS = [sys.executable, "-m", "pytest", "-q"]
QUIET = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
TESTS_ONLY = RunPolicy(allowlist=(f"{sys.executable} -m pytest",))

STEPS = [
    {"action": "rename_symbol", "args": {"old": "compute_total", "new": "cart_total"}},
    {"action": "add_parameter", "args": {"function": "cart_total", "parameter": "tax_rate", "argument": "0"}},
    {"action": "str_replace", "args": {
        "path": "shop/pricing.py",
        "old": "    return total.quantize(CENT, rounding=ROUND_HALF_UP)",
        "new": "    taxed = total * (1 + Decimal(str(tax_rate)))\n"
               "    return taxed.quantize(CENT, rounding=ROUND_HALF_UP)"}},
    {"action": "move_definition", "args": {"name": "apply_discount", "dest_file": "shop/discounts.py"}},
]


@pytest.fixture
def repo(tmp_path):
    return shutil.copytree(EDIT_REPO, tmp_path / "edit_repo")


def test_plan_lists_files_and_symbols_from_the_index(repo):
    plan = make_plan(PythonIndex(Workspace(repo)), STEPS)
    assert [step.action for step in plan] == [s["action"] for s in STEPS]
    assert plan[0].files == ("checks/check_pricing.py", "shop/cart.py", "shop/checkout.py", "shop/pricing.py",
                             "shop/report.py")
    assert plan[0].symbols == ("compute_total", "cart_total")
    assert plan[1].files == plan[0].files  # cart_total is known through the earlier rename
    assert plan[2].files == ("shop/pricing.py",)
    assert "shop/discounts.py" in plan[3].files and "checks/check_pricing.py" in plan[3].files


@pytest.mark.parametrize("steps, message", [
    ([{"action": "delete_everything", "args": {}}], "step 1: unknown action 'delete_everything'"),
    ([{"action": "rename_symbol", "args": {"old": "compute_total"}}], "step 1 \\(rename_symbol\\): missing a required"),
    ([{"action": "add_parameter", "args": {"function": "nope", "parameter": "p", "argument": "1"}}],
     "no definition of nope"),
])
def test_bad_plans_are_refused(repo, steps, message):
    with pytest.raises(L2MError, match=message):
        make_plan(PythonIndex(Workspace(repo)), steps)


def test_scripted_multi_step_edit_applies_passes_tests_and_undoes(repo):
    before = snapshot(repo)
    edits = EditSet(Workspace(repo))
    results = execute_plan(edits, make_plan(PythonIndex(edits), STEPS))
    assert all(not r.notes for r in results)
    diff = edits.diff()
    assert "-def compute_total(items):\n+def cart_total(items, tax_rate):\n" in diff
    assert "+++ b/shop/discounts.py" in diff and "+from shop.discounts import apply_discount" in diff
    assert snapshot(repo) == before  # nothing written before apply

    outcome = apply_and_test(edits, FIXTURE_TESTS, policy=TESTS_ONLY, env=QUIET)
    assert outcome.ok, outcome.test.output
    assert "7 passed" in outcome.test.output
    assert outcome.files == ["checks/check_pricing.py", "shop/cart.py", "shop/checkout.py", "shop/discounts.py",
                             "shop/pricing.py", "shop/report.py"]
    assert "compute_total" not in "".join(p.read_text() for p in repo.rglob("*.py"))
    assert "def apply_discount" in (repo / "shop/discounts.py").read_text()

    assert Toolbox(repo).undo().startswith("restored checks/check_pricing.py")  # a fresh toolbox, as a new process
    assert snapshot(repo) == before


def test_failing_tests_are_reported_and_reverted_on_request(repo):
    before = snapshot(repo)
    edits = EditSet(Workspace(repo))
    edits.str_replace("shop/pricing.py", "Decimal(100 - percent)", "Decimal(100 + percent)")
    outcome = apply_and_test(edits, FIXTURE_TESTS, policy=TESTS_ONLY, revert_on_fail=True, env=QUIET)
    assert not outcome.ok and outcome.reverted
    assert "failed" in outcome.test.output
    assert snapshot(repo) == before
    assert edits.journal.entries() == []


def test_a_refused_test_command_applies_nothing(repo):
    before = snapshot(repo)
    edits = EditSet(Workspace(repo))
    edits.str_replace("shop/cart.py", "return self\n", "return self  # fluent\n")
    with pytest.raises(L2MError, match="running commands is off"):
        apply_and_test(edits, ["make", "test"])
    assert snapshot(repo) == before


def test_a_failing_step_takes_the_whole_plan_back(repo):
    edits = EditSet(Workspace(repo))
    steps = [STEPS[0], {"action": "rename_symbol", "args": {"old": "final_price", "new": "cart_total"}}]
    with pytest.raises(L2MError, match="step 2 \\(rename_symbol\\) failed, the plan staged nothing: cart_total is"):
        execute_plan(edits, make_plan(PythonIndex(edits), steps))
    assert not edits and edits.step_count == 0


def test_rename_onto_a_local_variable_is_refused(repo):
    edits = EditSet(Workspace(repo))
    with pytest.raises(L2MError, match="subtotal is already used at shop/checkout.py:7:5"):
        execute_plan(edits, make_plan(PythonIndex(edits), [
            {"action": "rename_symbol", "args": {"old": "compute_total", "new": "subtotal"}}]))


# -- the Toolbox -----------------------------------------------------------------------------------

def test_every_tool_converts_to_a_langchain_tool_schema(repo):
    from langchain_core.utils.function_calling import convert_to_openai_tool

    tools = Toolbox(repo).tools()
    assert tuple(tools) == TOOL_NAMES
    for name, tool in tools.items():
        spec = convert_to_openai_tool(tool)["function"]
        assert spec["name"] == name and spec["description"]
    run_params = convert_to_openai_tool(tools["run"])["function"]["parameters"]
    assert run_params["properties"]["argv"] == {"items": {"type": "string"}, "type": "array"}


def test_toolbox_session_stages_shows_and_undoes(repo):
    tb = Toolbox(repo)
    assert "shop/pricing.py:8:5 function compute_total" == tb.find_symbol("compute_total")
    assert "shop/report.py:7:21 call" in tb.find_references("compute_total")
    assert tb.outline("shop/cart.py").splitlines()[:2] == ["6 class Cart", "    7 method __init__"]
    assert tb.search("apply_discount", paths=["checks/"]).startswith("checks/check_pricing.py:3:")
    snippet = tb.str_replace("shop/cart.py", "        return self\n", "        return self  # fluent\n")
    assert "    12\t        return self  # fluent" in snippet
    assert "     1\t# Cart" in tb.insert("shop/cart.py", 0, "# Cart")
    assert tb.view("shop/cart.py", 1, 2) == '     1\t# Cart\n     2\t"""A shopping cart."""'
    assert tb.create("shop/tax.py", "RATE = 0\n") == "staged new file shop/tax.py (1 lines)"
    assert "staged: renamed compute_total to cart_total in" in tb.rename_symbol("compute_total", "cart_total")
    assert "+# Cart" in tb.diff() and "+++ b/shop/tax.py" in tb.diff()
    assert tb.undo() == "took back the last staged edit of shop/report.py"
    assert tb.undo("shop/tax.py") == "took back the last staged edit of shop/tax.py"
    with pytest.raises(L2MError, match=r"occurs 2 times in shop/pricing.py \(lines 11, 18\)"):
        tb.str_replace("shop/pricing.py", ".quantize(", ".q(")
    with pytest.raises(L2MError, match="outside the repository"):
        tb.view("/etc/passwd")
    with pytest.raises(L2MError, match="running commands is off"):
        tb.run(["ls"])
    assert tb.run.__doc__ and "no shell" in tb.run.__doc__


def test_toolbox_run_with_permission(repo):
    out = Toolbox(repo, policy=RunPolicy(allow=True)).run([sys.executable, "-c", "print(6 * 7)"])
    assert out == "exit status 0\n42\n"
