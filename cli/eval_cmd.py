"""`l2m eval passkey|babilong|niah|report`: long-context evaluations against baselines, with plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from cli.common import L2MGroup, emit
from l2m_core.errors import L2MError

METHOD_NAMES = "l2m,truncate,full,rag"


@click.group(name="eval", cls=L2MGroup)
def eval_group() -> None:
    """Long-context evaluations: the memory engine against truncation, full attention and BM25 RAG."""


def _run_options(default_lengths: str) -> Callable:
    options = [
        click.option("--lengths", default=default_lengths, show_default=True,
                     help="Context lengths in tokens, comma or space separated: 0K 4K 16K 32K 64K 128K."),
        click.option("--samples", default=5, show_default=True, help="Samples per variant and length."),
        click.option("--seed", default=0, show_default=True, help="Seed of stories, keys, values and positions."),
        click.option("--model", "model_spec", default=None, help="Hub id, local directory or .gguf (default model)."),
        click.option("--methods", default=METHOD_NAMES, show_default=True, help="Methods to compare."),
        click.option("--data", type=click.Path(path_type=Path), default=None,
                     help="Data folder holding haystack/ and babi/ (default: $L2M_DATA)."),
        click.option("--out", type=click.Path(path_type=Path), default=None,
                     help="Results JSON (or a folder for it); default ./<task>-<timestamp>.json."),
        click.option("--top-k", default=4, show_default=True, help="rag: chunks pasted into the prompt."),
        click.option("--part-tokens", default=512, show_default=True, help="l2m: tokens per haystack document."),
        click.option("--hops", default=1, show_default=True,
                     help="l2m: reads per question; 2+ re-addresses memory with the first answer (chained reads)."),
        click.option("--store-dir", type=click.Path(path_type=Path), default=None,
                     help="l2m: base stores, reused across runs (default $L2M_HOME/eval-stores)."),
        click.option("--threads", type=int, default=None,
                     help="CPU threads for torch; 1 is fastest on a machine already busy with other work."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object."),
        click.option("--quiet", is_flag=True, help="No progress on stderr."),
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


_depths = click.option("--depths", default=None, help="Needle depths (0..1) cycled over samples; default 0.1..0.9.")


def _haystack(default: str) -> Callable:
    return click.option("--haystack", type=click.Choice(["noise", "novel"]), default=default, show_default=True,
                        help="Filler: repeated noise sentences or novel text.")


@eval_group.command()
@_run_options("4K,16K")
@_haystack("noise")
@_depths
def passkey(**kwargs) -> None:
    """Passkey retrieval: a 5-digit number hidden at a depth in filler."""
    _run("passkey", variants=None, **kwargs)


@eval_group.command()
@_run_options("0K,4K,16K")
@click.option("--tasks", default="qa1,qa2,qa3,qa4,qa5", show_default=True, help="bAbI tasks.")
def babilong(tasks: str, **kwargs) -> None:
    """BABILong-style bAbI qa1-qa5: story facts scattered through novel text."""
    _run("babilong", variants=tasks, haystack=None, depths=None, **kwargs)


@eval_group.command()
@_run_options("4K,16K")
@click.option("--variants", default="single,multikey,multivalue,multiquery", show_default=True,
              help="RULER needle variants.")
@_haystack("novel")
@_depths
def niah(variants: str, **kwargs) -> None:
    """RULER-style needles (single, multi-key, multi-value, multi-query) in novel text."""
    _run("niah", variants=variants, **kwargs)


@eval_group.command()
@click.option("--results", type=click.Path(path_type=Path), default=None,
              help="Folder of result JSON files (default: the current directory).")
@click.option("--output", type=click.Path(path_type=Path), default=None, help="Markdown (default ./RESULTS.md).")
def report(results: Path | None, output: Path | None) -> None:
    """Regenerate the results markdown and the plots from result JSON files."""
    from agent.evals.report import write_report

    path = write_report(results or Path.cwd(), output or Path("RESULTS.md"))
    click.echo(f"wrote {path}")


def _run(task: str, variants: str | None, lengths: str, samples: int, seed: int, model_spec: str | None,
         methods: str, data: Path | None, out: Path | None, top_k: int, part_tokens: int, hops: int,
         store_dir: Path | None, haystack: str | None, depths: str | None, threads: int | None, as_json: bool,
         quiet: bool) -> None:
    from agent.evals.methods import MethodOptions
    from agent.evals.plots import format_length
    from agent.evals.runner import EvalConfig, parse_length, parse_list, run

    config = EvalConfig(
        task=task, lengths=[parse_length(n) for n in parse_list(lengths)],
        variants=parse_list(variants) if variants else None, samples=samples, seed=seed, model=model_spec,
        methods=parse_list(methods), data=data, haystack=haystack, depths=_parse_depths(depths), out=out,
        quiet=quiet, threads=threads,
        options=MethodOptions(top_k=top_k, part_tokens=part_tokens, store_root=store_dir, hops=hops))
    results, path = run(config)
    lines = [f"results: {path}", f"plot:    {path.with_suffix('.png')}"]
    for row in results["summary"]:
        accuracy = "skipped" if row["accuracy"] is None else f"{100 * row['accuracy']:.0f}%"
        lines.append(f"{row['variant']:10} {format_length(row['length']):>6} {row['method']:9} {accuracy:>8}"
                     f"  ({row['scored']}/{row['samples']} scored, {row['errors']} errors)")
    errors = [r for r in results["records"] if r["status"] == "error"]
    if errors:
        lines.append(f"{len(errors)} samples failed; first: {errors[0]['method']}: {errors[0]['note']}")
    emit({"results": str(path), "summary": results["summary"]}, as_json, "\n".join(lines))


def _parse_depths(text: str | None) -> list[float] | None:
    if not text:
        return None
    from agent.evals.runner import parse_list

    try:
        depths = [float(d) for d in parse_list(text)]
    except ValueError as exc:
        raise L2MError(f"bad --depths {text!r}: give numbers between 0 and 1") from exc
    if not all(0 <= d <= 1 for d in depths):
        raise L2MError(f"bad --depths {text!r}: give numbers between 0 and 1")
    return depths
