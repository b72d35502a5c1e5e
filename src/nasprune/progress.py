"""Progress of long work: a rich bar in a terminal; elsewhere (a log file, CI, nohup) a
plain line at least every 30 seconds, so a long stage is never silent."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Seconds between two progress lines outside a terminal.
EVERY = 30.0


class ProgressBar:
    """``update(done, info)`` as work advances, ``print(line)`` for messages, ``close()``."""

    def __init__(self, enabled: bool, total: int, done: int, label: str, *,
                 every: float = EVERY, stream=None):
        self.enabled, self.total, self.label, self.every = enabled, total, label, every
        self.stream = stream or sys.stderr
        self.bar = None
        self.started = self.last = time.monotonic()
        self.done, self.info = done, ""
        if enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
            )
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, completed=done, info="")

    def update(self, done: int, info: str = "") -> None:
        self.done, self.info = done, info
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=info)
        elif self.enabled and time.monotonic() - self.last >= self.every:
            self._line()

    def print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)
        elif self.enabled:
            print(line, file=self.stream, flush=True)

    def _line(self) -> None:
        self.last = time.monotonic()
        elapsed = self.last - self.started
        print(f"{self.label}: {self.done}/{self.total} after {elapsed:.0f} s"
              + (f", {self.info}" if self.info else ""), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif self.enabled:
            self._line()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tracked(items: Iterable[T], total: int, label: str, enabled: bool = True) -> Iterator[T]:
    """``items`` with progress shown as a consumer we do not own takes them (importance
    scoring walks its calibration batches: minutes on a base-sized model)."""
    with ProgressBar(enabled, total, 0, label) as bar:
        for done, item in enumerate(items, 1):
            yield item
            bar.update(done)
