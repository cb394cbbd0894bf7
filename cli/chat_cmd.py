"""`l2m chat`: an interactive session whose turns and tool results live in memory; `--resume` continues."""

from __future__ import annotations

import sys

import click

from cli.common import address_head_option, emit, open_agent, store_options


@click.command()
@click.option("--resume", is_flag=True, help="Continue the most recent session.")
@click.option("--session", "session_id", default=None, help="Continue the session with this id.")
@click.option("--max-steps", default=4, show_default=True, help="Tool calls allowed per turn.")
@click.option("--allow-run", is_flag=True, help="Offer the `run` tool (commands without a shell, with a timeout).")
@click.option("--tool-steps", default=0, show_default=True,
              help="The first replies of each turn that must call a tool (the model chooses which).")
@address_head_option
@store_options
def chat(resume, session_id, max_steps, allow_run, tool_steps, address_head, store, model_spec, device,
         as_json) -> None:
    """Talk to the repository: one message per line on stdin; an empty line or `exit` ends."""
    with open_agent(store, model_spec, device, address_head, answers=True) as agent:
        from agent.loop import READ_TOOLS, AgentLoop
        from agent.session import Session
        from tools.run import RunPolicy
        from tools.toolbox import Toolbox

        session = Session.open(agent.memory.files.engine, resume=resume, session_id=session_id)
        toolbox = Toolbox(agent.root, policy=RunPolicy(allow=allow_run))
        tools = (*READ_TOOLS, "run") if allow_run else READ_TOOLS
        loop = AgentLoop(agent.memory, toolbox, session, max_steps=max_steps, tools=tools, tool_steps=tool_steps)
        interactive = sys.stdin.isatty() and not as_json
        if interactive:
            click.echo(f"session {session.id} (empty line or `exit` to stop)", err=True)
        while True:
            if interactive:
                click.echo("> ", nl=False, err=True)
            line = sys.stdin.readline()
            if not line or line.strip() in ("", "exit", "quit"):
                break
            turn = loop.run(line.strip())
            steps = "".join(f"[{s.tool}({s.arguments})]\n" for s in turn.steps)
            emit({"session": session.id, **turn.to_dict()}, as_json,
                 f"{steps}{turn.answer}\n  sources: {', '.join(map(str, turn.citations[:3])) or '-'}")
