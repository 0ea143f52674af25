"""Progress bars (rich) shared by training, audits and every other long loop."""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(enabled: bool = True) -> Progress:
    """A progress display with a description, a bar, counts, elapsed and remaining time.

    Use as a context manager; ``enabled=False`` gives a silent one (for tests and libraries).
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        refresh_per_second=4,
    )


class Ticker:
    """One task on a progress display, redrawn at most every ``interval`` seconds.

    Per-step updates of a rich bar cost more than a small model's training step; batching them
    keeps the bar live without slowing the loop.
    """

    def __init__(self, bar: Progress, description: str, total: int, completed: int = 0, interval: float = 0.1) -> None:
        self.bar, self.interval = bar, interval
        self.task = bar.add_task(description, total=total, completed=completed, info="")
        self.pending, self.info, self.last = 0, "", time.monotonic()

    def tick(self, info: str | None = None, steps: int = 1) -> None:
        """Count ``steps`` finished steps; ``info`` is the text shown beside the bar."""
        self.pending += steps
        if info is not None:
            self.info = info
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        self.bar.update(self.task, advance=self.pending, info=self.info)
        self.pending, self.last = 0, time.monotonic()
