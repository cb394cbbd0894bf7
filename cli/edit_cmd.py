"""`l2m plan`, `l2m edit`, `l2m undo`: multi-step edits planned, shown as one diff, applied on request."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

from cli.common import emit, find_store
from l2m_core.store import is_store

PLAN_TOKENS = 256  # a constrained plan of a few steps fits easily; a cut-off one is an error, never half a plan


def _root(store: str | None) -> Path:
    """The corpus root of the nearest store, else the current directory."""
    from agent.core import store_root

    path = find_store(store)
    return store_root(path) if path is not None and is_store(path) else Path.cwd()


def _planned(task: str, store: str | None, model_spec: str | None, test: str | None):
    from agent.planner import plan_task
    from tools.run import RunPolicy
    from tools.toolbox import Toolbox

    root = _root(store)
    toolbox = Toolbox(root, policy=RunPolicy(allowlist=(test,) if test else ()))

    agents = []  # opened on the first question only: the literal forms need no model

    def opened():
        from cli.common import open_agent

        if not agents:
            agents.append(open_agent(store, model_spec))
        return agents[0]

    def ask_model(instruction: str, text: str, schema: dict) -> tuple[str, list[tuple[str, float]]]:
        from l2m_core.grammar import ask_json

        plan, _, pieces = ask_json(opened().memory, text, schema, instruction=instruction, max_new_tokens=PLAN_TOKENS)
        return json.dumps(plan), pieces

    def score(prompt: str, options) -> list[float]:
        from l2m_core.scoring import option_logprobs

        memory = opened().memory
        return option_logprobs(memory.model, memory.tokenizer, prompt, options)

    try:
        return toolbox, plan_task(task, toolbox.index, ask_model, toolbox.edits, score)
    finally:
        for agent in agents:
            agent.close()


common = [
    click.option("--store", default=None, help="Store directory (default: the nearest .l2m/)."),
    click.option("--model", "model_spec", default=None, help="Model for tasks the rules do not cover."),
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
]


def _with_common(func):
    for option in common:
        func = option(func)
    return func


@click.command()
@click.argument("task")
@_with_common
def plan(task, store, model_spec, as_json) -> None:
    """Show the ordered steps TASK would take, with the files and symbols each touches."""
    _, planned = _planned(task, store, model_spec, None)
    emit(planned.to_dict(), as_json, str(planned))


@click.command()
@click.argument("task")
@click.option("--apply", "do_apply", is_flag=True, help="Write the edits (default: only show the diff).")
@click.option("--test", default=None, help='A test command run after applying, e.g. "python -m pytest -q".')
@click.option("--revert-on-fail", is_flag=True, help="Undo the edits when the test command fails.")
@_with_common
def edit(task, do_apply, test, revert_on_fail, store, model_spec, as_json) -> None:
    """Plan TASK, stage its edits and show them as one unified diff; write them only with --apply."""
    from tools.plan import execute_plan

    toolbox, planned = _planned(task, store, model_spec, test)
    execute_plan(toolbox.edits, planned.steps)
    diff = toolbox.edits.diff()
    data = {**planned.to_dict(), "diff": diff, "applied": False}
    if not do_apply:
        emit(data, as_json, f"{planned}\n\n{diff}\n(dry run: pass --apply to write these edits)")
        return
    outcome = toolbox.apply(shlex.split(test) if test else None, revert_on_fail=revert_on_fail)
    data.update(applied=True, files=outcome.files, reverted=outcome.reverted,
                test=None if outcome.test is None else {"ok": outcome.test.ok, "output": outcome.test.output[-4000:]})
    status = "" if outcome.test is None else (
        "\ntests passed" if outcome.ok else f"\ntests FAILED{' (edits reverted)' if outcome.reverted else ''}:\n"
                                            f"{outcome.test.output[-2000:]}")
    emit(data, as_json, f"{planned}\n\n{diff}\napplied to {', '.join(outcome.files)}{status}")
    if not outcome.ok:
        raise SystemExit(1)


@click.command()
@click.option("--store", default=None, help="Store directory (default: the nearest .l2m/).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def undo(store, as_json) -> None:
    """Restore the files changed by the last applied edit."""
    from tools.toolbox import Toolbox

    message = Toolbox(_root(store)).undo()
    emit({"undone": message}, as_json, message)
