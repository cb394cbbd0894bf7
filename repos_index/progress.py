"""A progress display for ingest (files, tokens, tokens/s and time left) and batch answering, on stderr.

On a terminal, live bars through rich. On any other stderr (a log file, a pipe, a CI job) live bars print
nothing until they stop, which left a 20-minute ingest run from a script silent; there a plain line is
written at most every `LINE_EVERY_S` seconds instead.

Tokens are estimated from bytes (about 4 per token) before the model sees them; the count is for
pacing the display, not for accounting.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

BYTES_PER_TOKEN = 4
LINE_EVERY_S = 30.0  # the least time between two progress lines on a stderr that is not a terminal


def estimate_tokens(text: str) -> int:
    return max(1, len(text.encode("utf-8")) // BYTES_PER_TOKEN)


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "")
        return Text(f"{_rate(speed)} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")


def _rate(speed: float) -> str:
    """'618' tokens a second, '0.25' questions."""
    return f"{speed:,.0f}" if speed >= 10 else f"{speed:.2g}"


class IngestProgress(AbstractContextManager):
    """Phases of work, each a bar: indexing (files), ingesting into memory (tokens, over files), answering a
    batch (questions). Silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        console = Console(stderr=True)
        self._progress = (
            Progress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                TextColumn("{task.fields[files]}"),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[unit]}"),
                _Rate(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            if enabled and console.is_terminal
            else None
        )
        self._lines = enabled and not console.is_terminal
        self._task: TaskID | None = None
        self._files = (0, 0)
        self._count_files = False
        self._phase = ("", 0, "")  # description, total, unit
        self._done, self._started, self._last_line = 0, time.monotonic(), time.monotonic()

    def __enter__(self) -> IngestProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def phase(self, description: str, total: int, files: int, unit: str) -> None:
        """Start a bar of `total` units over `files` files (units other than files also show the file count,
        where there are files)."""
        self._files = (0, files)
        self._count_files = unit != "files" and files > 0
        total = max(total, 1)
        self._phase, self._done, self._started = (description, total, unit), 0, time.monotonic()
        if self._progress is not None:
            self._task = self._progress.add_task(description, total=total, files=self._files_text(), unit=unit)

    def advance(self, amount: int = 1) -> None:
        """One more file (or question) done, worth `amount` units."""
        self._files = (self._files[0] + 1, self._files[1])
        self._done += amount
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=amount, files=self._files_text())
        if self._lines and time.monotonic() - self._last_line >= LINE_EVERY_S:
            self._last_line = time.monotonic()
            print(self._line(), file=sys.stderr, flush=True)

    def _line(self) -> str:
        """'ingesting: 41,200/422,000 ~tok (12/100 files), 310 ~tok/s, about 20 min left'"""
        description, total, unit = self._phase
        files = f" ({self._files_text()})" if self._count_files else ""
        rate = self._done / max(time.monotonic() - self._started, 1e-9)
        line = f"{description}: {self._done:,}/{total:,} {unit}{files}, {_rate(rate)} {unit}/s"
        if rate <= 0:
            return line
        left = max(total - self._done, 0) / rate
        return line + (f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left")

    def _files_text(self) -> str:
        return f"{self._files[0]}/{self._files[1]} files" if self._count_files else ""
