"""`l2m batch IN.jsonl [--out OUT.jsonl]`: many questions against one store, resumable."""

from __future__ import annotations

from pathlib import Path

import click

from cli.common import (
    address_head_option,
    cluster_from,
    cluster_options,
    emit,
    open_agent,
    reader_option,
    store_options,
)
from l2m_core.errors import L2MError


@click.command()
@click.argument("in_path", type=click.Path(path_type=Path))
@click.option("--out", "out_path", type=click.Path(path_type=Path),
              help="JSONL answers (appended)  [default: IN's name with .answers.jsonl, beside it]")
@click.option("--max-tokens", default=96, show_default=True, help="Longest answer, in tokens.")
@address_head_option
@reader_option
@cluster_options
@store_options
def batch(in_path, out_path, max_tokens, address_head, reader, ray_address, workers, store, model_spec, device,
          as_json) -> None:
    """Answer every question of IN_PATH (one JSON object per line); rerun to resume."""
    out_path = out_path or in_path.with_name(f"{in_path.stem}.answers.jsonl")
    if out_path.resolve() == in_path.resolve():
        raise L2MError(f"the answers file {out_path} is the questions file; give another --out")
    cluster = cluster_from(ray_address, workers)
    if cluster is not None and reader not in (None, "none"):
        raise L2MError("--reader is not supported with a cluster yet (its workers read without it)")
    with open_agent(store, model_spec, device, address_head, reader, answers=True) as agent:
        from agent.batch import run_batch_all

        def answer_all(items: list[tuple[str, int]]):
            for answer in agent.ask_many(items, cluster=cluster, address_head=address_head):
                yield answer if isinstance(answer, Exception) else answer.to_dict()

        report = run_batch_all(answer_all, in_path, out_path, max_tokens, progress=not as_json)
    failed = f": {', '.join(report.failed[:10])}" if report.failed else ""
    emit({**report.to_dict(), "out": str(out_path)}, as_json,
         f"{report.answered} answered, {report.skipped} already done, {len(report.failed)} failed{failed}; "
         f"answers in {out_path}")
    if report.failed:
        raise SystemExit(1)
