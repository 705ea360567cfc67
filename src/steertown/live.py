"""Terminal output of a run: the guide's live view per tick, or a progress bar with ETA.

One view per run and process (`open_view`/`close_view`), so a run's chunks share one
bar whose ETA comes from every tick done since the run (or the resume) started. `color`
only switches colours: on a terminal the bar refreshes either way; where stdout is not a
terminal (a log file, a worker) a plain progress line is printed instead.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from steertown.config import TRAITS
from steertown.sim.engine import TickResult

RULE = "=" * 80
MARK = {True: ("✓", "green"), False: ("✗", "red")}


def steering_label(row: dict, top: int = 2) -> str:
    """`[E:+0.8, C:+0.5]`: the strongest traits a message was generated with."""
    alphas = sorted(((row[f"alpha_{t}"], t) for t in TRAITS), key=lambda x: -abs(x[0]))
    shown = [f"{t}:{a:+.1f}" for a, t in alphas[:top] if abs(a) >= 0.05]
    return f"[{', '.join(shown)}]" if shown else "[unsteered]"


class LiveView:
    """Prints each tick as it completes (live=true) or drives a progress bar."""

    def __init__(self, run_id: str, steps: int, agents: int, live: bool, color: bool,
                 start_tick: int = 0, names: dict[str, str] | None = None):
        self.run_id, self.steps, self.agents, self.live = run_id, steps, agents, live
        self.start_tick, self.started = start_tick, time.monotonic()
        self.console = Console(no_color=not color, highlight=False, file=sys.stdout,
                               soft_wrap=True)
        self.names = names or {}
        self.progress: Progress | None = None
        self.every = max(1, steps // 50)  # plain lines: about 50 per run
        if not live and self.console.is_terminal:
            self.progress = Progress(
                TextColumn(f"[bold]{run_id}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("ticks"), TimeElapsedColumn(), TextColumn("eta"),
                # ETA over the whole run so far (Rich's default forgets ticks older than 30 s,
                # and a real-model tick can take longer than that)
                TimeRemainingColumn(), console=self.console, transient=False,
                speed_estimate_period=7 * 24 * 3600)
            self.progress.start()
            self.task = self.progress.add_task("simulate", total=steps, completed=start_tick)

    def eta_seconds(self, tick: int) -> float | None:
        """Seconds left at `tick`, from the mean tick time since this view opened."""
        done = tick - self.start_tick
        if done <= 0:
            return None
        return (time.monotonic() - self.started) / done * (self.steps - tick)

    def _plain_progress(self, tick: int) -> None:
        if tick % self.every and tick != self.steps:
            return
        eta = self.eta_seconds(tick)
        left = "--:--:--" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - self.started))
        self.console.print(f"{self.run_id}: {tick}/{self.steps} ticks, {elapsed} elapsed, "
                           f"eta {left}")

    def on_tick(self, result: TickResult) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=result.tick)
            return
        if not self.live:
            self._plain_progress(result.tick)
            return
        c = self.console
        c.print(RULE)
        c.print(Text(f"TICK {result.tick} | {len(result.encounters)} events scheduled", style="bold"))
        c.print(RULE)
        msgs = {(m["event_id"], m["agent_id"]): m for m in result.messages if m["kind"] == "action"}
        for a in result.actions:
            m = msgs[(a["event_id"], a["agent_id"])]
            mark, style = MARK[a["success"]]
            target = f" → {a['target']}" if a["target"] else ""
            line = Text(f"  {mark} ", style=style)
            line.append(f"{a['agent_id']} {a['action_type']}{target}", style="bold")
            if not a["success"]:
                line.append(f"  ({a['failure_reason']})", style="red")
            c.print(line)
            excerpt = " ".join(m["content"].split())[:70]
            c.print(f"    💬 {a['agent_id']} @ {a['location']}: {excerpt}")
            c.print(Text(f"       [{m['tokens_in']}→{m['tokens_out']} tokens] {steering_label(m)}",
                         style="dim"))
        for r in result.reflections:
            c.print(Text(f"  ✎ {r['agent_id']} plans: {r['plan'][:70]}", style="cyan"))
        c.print(f"\n  ⏱  Tick completed in {result.ticks[0]['tick_seconds']:.2f}s\n")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


_OPEN: dict[str, LiveView] = {}


def open_view(run_id: str, steps: int, agents: int, live: bool, color: bool,
              start_tick: int = 0) -> LiveView:
    """The run's view in this process: the open one, or a new one starting at `start_tick`."""
    if run_id not in _OPEN:
        _OPEN[run_id] = LiveView(run_id, steps, agents, live, color, start_tick)
    return _OPEN[run_id]


def close_view(run_id: str) -> None:
    """Stop and forget the run's view (at the end of its simulation, or on failure)."""
    view = _OPEN.pop(run_id, None)
    if view is not None:
        view.stop()


def print_summary(run_id: str, ticks: int, agents: int, tick_seconds: float,
                  wall_seconds: float, color: bool) -> None:
    """The guide's closing block; times are summed over all ticks (resumes included)."""
    c = Console(no_color=not color, highlight=False)
    c.print(RULE)
    c.print(Text("SIMULATION COMPLETE", style="bold green"))
    c.print(f"  Run ID: {run_id}")
    c.print(f"  Ticks: {ticks}")
    c.print(f"  Agents: {agents}")
    c.print(f"  Total time: {tick_seconds:.2f}s in ticks, {wall_seconds:.2f}s wall (this process)")
    c.print(f"  Avg time/tick: {tick_seconds / max(ticks, 1):.2f}s")
    c.print(RULE)
