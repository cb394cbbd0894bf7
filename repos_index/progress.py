"""A progress display for ingest: files, tokens, tokens/s and time left, on stderr through rich.

Tokens are estimated from bytes (about 4 per token) before the model sees them; the count is for
pacing the display, not for accounting.
"""

from __future__ import annotations

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


def estimate_tokens(text: str) -> int:
    return max(1, len(text.encode("utf-8")) // BYTES_PER_TOKEN)


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "")
        return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")


class IngestProgress(AbstractContextManager):
    """Two bars: indexing (files) and ingesting into memory (tokens). Silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self._progress = (
            Progress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                TextColumn("{task.fields[files]}"),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[unit]}"),
                _Rate(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            if enabled
            else None
        )
        self._task: TaskID | None = None
        self._files = (0, 0)
        self._count_files = False

    def __enter__(self) -> IngestProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def phase(self, description: str, total: int, files: int, unit: str) -> None:
        """Start a bar of `total` units over `files` files (units other than files also show the file count)."""
        self._files = (0, files)
        self._count_files = unit != "files"
        if self._progress is not None:
            self._task = self._progress.add_task(description, total=max(total, 1), files=self._files_text(), unit=unit)

    def advance(self, amount: int = 1) -> None:
        """One more file done, worth `amount` units."""
        self._files = (self._files[0] + 1, self._files[1])
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=amount, files=self._files_text())

    def _files_text(self) -> str:
        return f"{self._files[0]}/{self._files[1]} files" if self._count_files else ""
