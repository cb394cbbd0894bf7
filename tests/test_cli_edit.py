"""`l2m plan/edit/undo` on the fixture repository: a scripted multi-step edit applies, passes the
repository's own tests and undoes cleanly; bad edits write nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "edit_repo"
TASK = "rename compute_total to cart_total then add parameter tax_rate=0.0 to cart_total"


def l2m(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.py"))}


@pytest.fixture
def repo(tmp_path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "repo")
    return tmp_path / "repo"


def test_plan_lists_steps_and_files(repo):
    plan = json.loads(l2m("plan", TASK, "--json", cwd=repo).stdout)
    assert plan["source"] == "rules" and [s["action"] for s in plan["steps"]] == ["rename_symbol", "add_parameter"]
    assert "shop/pricing.py" in plan["steps"][0]["files"]


def test_dry_run_writes_nothing(repo):
    before = snapshot(repo)
    done = l2m("edit", TASK, cwd=repo)
    assert done.returncode == 0 and "+def cart_total" in done.stdout.replace("\n+def cart_total", "+def cart_total")
    assert snapshot(repo) == before


def test_multi_step_edit_applies_passes_tests_and_undoes(repo):
    before = snapshot(repo)
    done = l2m("edit", TASK, "--apply", "--test", f"{sys.executable} -m pytest -q", "--json", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["applied"] and result["test"]["ok"]
    assert "compute_total" not in "".join(p.read_text() for p in repo.rglob("*.py"))
    assert "tax_rate" in (repo / "shop" / "pricing.py").read_text()
    assert l2m("undo", cwd=repo).returncode == 0
    assert snapshot(repo) == before


@pytest.mark.parametrize("plan, message", [
    ([{"action": "str_replace", "args": {"path": "shop/cart.py", "old": "no such text", "new": "x"}}], "not found"),
    ([{"action": "str_replace", "args": {"path": "../outside.py", "old": "a", "new": "b"}}], "outside"),
    ([{"action": "rename_symbol", "args": {"old": "nothing_here", "new": "x"}}], "no definition"),
])
def test_bad_edits_give_one_line_and_write_nothing(repo, plan, message):
    before = snapshot(repo)
    done = l2m("edit", json.dumps(plan), "--apply", cwd=repo)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert snapshot(repo) == before


def test_text_found_twice_names_the_lines(repo):
    (repo / "dup.py").write_text("x = 1\nx = 1\n")
    plan = [{"action": "str_replace", "args": {"path": "dup.py", "old": "x = 1", "new": "x = 2"}}]
    done = l2m("edit", json.dumps(plan), "--apply", cwd=repo)
    assert done.returncode == 2 and "1" in done.stderr and "2" in done.stderr
    assert (repo / "dup.py").read_text() == "x = 1\nx = 1\n"


def test_failing_tests_revert_when_asked(repo):
    before = snapshot(repo)
    plan = [{"action": "str_replace", "args": {"path": "shop/pricing.py", "old": "def compute_total",
                                               "new": "def compute_totally"}}]
    done = l2m("edit", json.dumps(plan), "--apply", "--test", f"{sys.executable} -m pytest -q",
               "--revert-on-fail", cwd=repo)
    assert done.returncode == 1 and "reverted" in done.stdout
    assert snapshot(repo) == before


PLAIN_RENAME = "Rename the function compute_total to total_amount everywhere it is defined and used"


@pytest.mark.model
def test_a_plain_rename_request_is_planned_by_the_model_applied_and_undone(repo):
    """Issue 15's request: the literal forms refuse it (trailing words), and the default model used to give
    "no valid JSON plan"; decoded under the plan grammar it is a plan, made by the model."""
    before = snapshot(repo)
    assert l2m("ingest", ".", cwd=repo).returncode == 0
    done = l2m("edit", PLAIN_RENAME, "--apply", "--test", f"{sys.executable} -m pytest -q", "--json", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["source"] == "model" and result["test"]["ok"]
    assert [(s["action"], s["args"]) for s in result["steps"]] == [
        ("rename_symbol", {"old": "compute_total", "new": "total_amount"})]
    assert "compute_total" not in "".join(p.read_text() for p in repo.rglob("*.py") if ".l2m" not in p.parts)
    assert l2m("undo", cwd=repo).returncode == 0
    assert snapshot(repo) == before


@pytest.mark.model
def test_chat_finds_a_symbol_then_views_its_definition(repo):
    """Issue 20's two-step task with the default model: find_symbol, then (offered right after it) a view of
    the definition found, each chosen by the model."""
    assert l2m("ingest", ".", cwd=repo).returncode == 0
    done = subprocess.run([sys.executable, "-m", "cli", "chat", "--allow-run", "--max-steps", "2", "--json"], cwd=repo,
                          input="Find where compute_total is defined, then view its definition.\n",
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout)["steps"]
    assert [(s["tool"], s["arguments"].get("name") or s["arguments"].get("path")) for s in steps] == [
        ("find_symbol", "compute_total"), ("view", "shop/pricing.py")]
    assert "def compute_total(items):" in steps[1]["observation"]
