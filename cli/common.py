"""What every command shares: one-line errors, JSON or text output."""

from __future__ import annotations

import json

import click

from l2m_core.errors import L2MError


class L2MGroup(click.Group):
    """A click group that turns `L2MError` into one line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except L2MError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def emit(data: dict, as_json: bool, text: str) -> None:
    """Print `text` for people, or `data` as one JSON object with `--json`."""
    click.echo(json.dumps(data, ensure_ascii=False) if as_json else text)
