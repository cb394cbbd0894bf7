"""The `l2m` command line. Each command group lives in its own module; this file wires them up.

User errors (`L2MError`) are printed as one line and exit with status 2; no traceback reaches the user.
"""

from __future__ import annotations

import click

from cli.batch_cmd import batch
from cli.chat_cmd import chat
from cli.common import L2MGroup
from cli.corpus_cmd import ask, ingest
from cli.edit_cmd import edit, plan, undo
from cli.eval_cmd import eval_group
from cli.memory_cmd import memory
from cli.model_cmd import model
from cli.train_cmd import train


@click.group(cls=L2MGroup)
@click.version_option(package_name="l2m")
def cli() -> None:
    """L2M: an agent whose long-horizon state is a Large Memory Model's memory."""


for command in (ingest, ask, chat, plan, edit, undo, batch, memory, model, train, eval_group):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="l2m")
