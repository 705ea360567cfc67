"""Progress of `verify`, per stage with an ETA: a rich bar on a terminal, plain lines
otherwise (logs, Prefect, pipes), so a long verification never runs silent."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """`with progress.stage("decisions", 64) as step: ... step()` once per unit of work.

    `step(total=n)` (re)sets the total where it is known only once the work is planned
    (the dose-response's batches)."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every  # plain lines: at most one per `every` seconds (and the last)

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[], None]]:
        if self.tty:
            with self._rich(name, total) as step:
                yield step
            return
        start, done, last = time.perf_counter(), 0, 0.0
        print(f"verify: {name}: started", file=self.stream, flush=True)

        def step(n: int = 1, total: int | None = None) -> None:
            nonlocal done, last
            if total is not None:
                globals_total[0] = total
            done += n
            total_now = globals_total[0]
            now = time.perf_counter() - start
            if done and (now - last >= self.every or done == total_now):
                last = now
                eta = now / done * max(total_now - done, 0)
                print(f"verify: {name} {done}/{total_now} ({done / max(total_now, 1):.0%}), "
                      f"{_clock(now)} elapsed, ETA {_clock(eta)}", file=self.stream, flush=True)
        globals_total = [total]
        yield step
        print(f"verify: {name}: done in {_clock(time.perf_counter() - start)}",
              file=self.stream, flush=True)

    @contextmanager
    def _rich(self, name: str, total: int) -> Iterator[Callable[[], None]]:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        bar = RichProgress(TextColumn(f"verify: {name}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                           console=Console(file=self.stream), transient=False)
        with bar:
            task = bar.add_task(name, total=total)

            def step(n: int = 1, total: int | None = None) -> None:
                if total is not None:
                    bar.update(task, total=total)
                bar.advance(task, n)
            yield step


class Silent(Progress):
    """No output (tests, library callers that print their own)."""

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[], None]]:
        yield lambda n=1, total=None: None
