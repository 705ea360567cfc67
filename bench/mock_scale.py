"""A large town on the mock backend, end to end: `bench/run.py --mock-scale`.

10,000 agents x 100 ticks (the fast arm's other settings: 12 events per tick, reflect
every 5, checkpoints every 10 ticks) on the mock backend with the hashing embedder, the
way a run does it (`prepare_run`, `run_chunk` per checkpoint chunk, `finish_run`), then
the analysis and the HTML report. Records the wall time of each stage and the process's
resident memory after every chunk (flat = the state does not grow with ticks).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.workload import current_rss_mb


def mock_town(population: int, ticks: int, tmp: Path, every: int = 10) -> dict[str, Any]:
    """Run and report a mock town; seconds per stage and RSS after each chunk."""
    from steertown.analysis.report import write_report
    from steertown.analysis.summary import analyze_run
    from steertown.config_loading import load_config
    from steertown.inference import get_backend, get_embedder
    from steertown.sim.runner import finish_run, prepare_run, run_chunk

    cfg = load_config({"model": {"name": "mock"}, "memory": {"embedder": "hashing"},
                       "population": population, "steps": ticks, "checkpoint_every": every,
                       "run_id": "mock-scale", "storage_dir": str(tmp / "dumps"),
                       "reports_dir": str(tmp / "reports"), "live": False})
    t0 = time.perf_counter()
    plan = prepare_run(cfg, tmp)
    backend, embedder = get_backend(cfg), get_embedder("hashing")
    rss = [current_rss_mb()]
    events = 0
    for start, end in plan.chunks:
        events += run_chunk(cfg, plan.run_dir, start, end, backend, embedder)["events"]
        rss.append(current_rss_mb())
    finish_run(plan.run_dir)
    t_sim = time.perf_counter() - t0
    summary = analyze_run(Path(plan.run_dir))
    t_an = time.perf_counter() - t0 - t_sim
    page = write_report(Path(plan.run_dir), Path(cfg.reports_dir), summary=summary)
    t_rep = time.perf_counter() - t0 - t_sim - t_an
    return {"population": population, "ticks": ticks, "events": events,
            "simulate_s": t_sim, "analyze_s": t_an, "report_s": t_rep,
            "total_s": t_sim + t_an + t_rep, "rss_mb": rss, "report": str(page),
            "report_bytes": page.stat().st_size}


def measure(table, population: int = 10_000, ticks: int = 100) -> dict[str, Any]:
    """The bench: rows into `table`, the facts as a dict."""
    with tempfile.TemporaryDirectory(prefix="steertown-mockscale-") as d:
        r = mock_town(population, ticks, Path(d))
    label = f"mock {population:,} agents x {ticks} ticks"
    rss = r["rss_mb"]
    # Flat: growth over the second half of the run vs its first chunk (caches warm by then).
    half = rss[len(rss) // 2]
    table.add("mock scale", f"{label}: simulate ({r['events']} events)", r["simulate_s"], None,
              f"{r['simulate_s'] / ticks * 1000:.0f} ms/tick; RSS after each chunk "
              f"{rss[1]:.0f} -> {half:.0f} (half) -> {rss[-1]:.0f} MB")
    table.add("mock scale", f"{label}: analyze", r["analyze_s"])
    table.add("mock scale", f"{label}: HTML report", r["report_s"], None,
              f"{r['report_bytes'] / 1e6:.1f} MB page")
    table.add("mock scale", f"{label}: total", r["total_s"], None, "goal: under 120 s")
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()
            if k != "report"} | {"rss_mb": [round(x) for x in rss]}
