"""The progress view: one per run, a true ETA, refreshing on a terminal with color=false."""

from __future__ import annotations

import re

from steertown import live
from steertown.live import LiveView, close_view, open_view


def test_bar_refreshes_on_a_terminal_without_color(monkeypatch, capsys):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # Rich: stdout is a terminal
    view = LiveView("r", steps=10, agents=2, live=False, color=False, start_tick=2)
    try:
        assert view.progress is not None and view.progress.live.auto_refresh
        view.progress.update(view.task, completed=5)
        view.progress.refresh()
        out = capsys.readouterr().out
        assert "5/10" in out  # drawn while running, not only when stopped
        assert not re.search(r"\x1b\[[0-9;]*3[0-9]m", out)  # no foreground colours
    finally:
        view.stop()


def test_eta_counts_every_tick_since_the_view_opened(monkeypatch):
    clock = iter([100.0, 104.0])
    monkeypatch.setattr(live.time, "monotonic", lambda: next(clock))
    view = LiveView("r", steps=10, agents=2, live=False, color=False, start_tick=2)
    # 4 ticks (3..6) in 4 s, 4 ticks left: 4 s, whatever the chunking was
    assert view.eta_seconds(6) == 4.0
    view.stop()


def test_plain_progress_lines_where_stdout_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    view = LiveView("r", steps=4, agents=2, live=False, color=False)
    assert view.progress is None
    for tick in (1, 2):
        view._plain_progress(tick)
    out = capsys.readouterr().out
    assert "r: 1/4 ticks" in out and "r: 2/4 ticks" in out and "eta" in out


def test_one_view_per_run_across_chunks(monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    first = open_view("run-a", 10, 2, live=False, color=False, start_tick=0)
    assert open_view("run-a", 10, 2, live=False, color=False, start_tick=5) is first
    close_view("run-a")
    assert open_view("run-a", 10, 2, live=False, color=False, start_tick=5) is not first
    close_view("run-a")
