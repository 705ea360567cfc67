"""The stages of a study, one cell after another, each resumable: simulate, verify, analyze.

- **simulate**: every cell's run through the run flow (`flows.pipeline.run_flow`, with
  verification off). A complete cell with its `analysis/summary.json` is skipped without
  starting a flow or loading the model; an unfinished one resumes from its last
  checkpoint (same run_id); the model loads once per process, when the first cell that
  needs it starts.
- **verify**: `steertown verify <run_dir> [verify_args]` per complete cell, in its own
  process (the public entry point, so whatever verdict the installed code gives). Its
  outcome is recorded in `<data_dir>/study-state/<name>/verify/<run_id>.json`; a cell with
  a record for the same finished run is skipped; a verification that died (no verdict
  printed) is retried next time.
- **analyze**: the study's results from the complete cells
  (`steertown.analysis.study_results`).

Each stage prints one line per cell with the study's progress and an ETA (from the
seconds per tick, or per verification, measured in this invocation).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from flows.environment import PROJECT_ROOT, child_pythonpath
from flows.study_spec import Cell, StudySpec
from steertown.storage.run_dir import RunDir, atomic_write_json

VERDICT = re.compile(r"Steering verification:\s*(.+?)(?:\s{2,}|\s*\(|$)")  # "NOT VERIFIED  (path)"


def cell_state(cell: Cell) -> dict:
    """{"status": new | partial | complete, "ticks_done", "steps", "analysed", "finished"}
    from the cell's manifest, without loading anything else."""
    run = RunDir(cell.run_dir)
    steps = int(cell.config["steps"])
    if not run.exists():
        return {"status": "new", "ticks_done": 0, "steps": steps, "analysed": False}
    m = run.read_manifest()
    status = "complete" if m.get("status") == "complete" else "partial"
    return {"status": status, "ticks_done": int(m.get("ticks_done", 0)), "steps": steps,
            "analysed": (run.path / "analysis" / "summary.json").is_file(),
            "finished": m.get("finished")}


def failure(error: BaseException) -> str:
    """The status of a cell, fork or run that raised: `failed: <the error on one line>`."""
    return f"failed: {' '.join(str(error).split())[:300] or type(error).__name__}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def eta_text(seconds_left: float | None) -> str:
    """`ETA 1h05m (~20:45 UTC)`, or `ETA unknown` before anything was measured."""
    if seconds_left is None:
        return "ETA unknown (nothing measured yet)"
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_left)
    return f"ETA {_duration(seconds_left)} (~{at:%H:%M} UTC)"


def simulate_stage(spec: StudySpec, say=print) -> dict[str, str]:
    """Run (or resume, or skip) every cell; return {run_id: status}. A failed cell is
    reported and the next one runs."""
    cells = spec.cells()
    states = {c.run_id: cell_state(c) for c in cells}
    done = sum(s["status"] == "complete" for s in states.values())
    say(f"Study {spec.name}: simulate {len(cells)} cells ({done} complete already); "
        f"runs in {Path(cells[0].config['storage_dir'])}")
    out: dict[str, str] = {}
    spent, ticks_run = 0.0, 0
    for i, cell in enumerate(cells, 1):
        before = states[cell.run_id]
        t0 = time.perf_counter()
        if before["status"] == "complete" and before["analysed"]:
            status = "skipped (complete)"
        else:
            status = _attempt_cell(cell, before, say)
        after = states[cell.run_id] = cell_state(cell)
        ran = max(0, after["ticks_done"] - before["ticks_done"])
        if ran:
            spent += time.perf_counter() - t0
            ticks_run += ran
        out[cell.run_id] = status
        left = sum(s["steps"] - s["ticks_done"] for s in states.values()
                   if s["status"] != "complete")
        complete = sum(s["status"] == "complete" for s in states.values())
        rate = spent / ticks_run if ticks_run else None
        say(f"[simulate {i}/{len(cells)}] {cell.run_id}: {status} "
            f"({_duration(time.perf_counter() - t0)}) | {complete}/{len(cells)} cells complete, "
            f"{left} ticks left, "
            + (f"{eta_text(left * rate)} at {rate:.1f} s/tick" if rate else eta_text(
                None if left else 0.0)))
    return out


# Prefect's temporary API server sometimes fails its first start in a fresh PREFECT_HOME
# (uvicorn: "address already in use", then "Timed out while attempting to connect to
# ephemeral Prefect API server"; upstream prefect#16397); the next start in the same
# process works, and the cell resumes from its checkpoint, so it is run once more.
PREFECT_START_FAILED = "ephemeral Prefect API server"


def _attempt_cell(cell: Cell, state: dict, say) -> str:
    """Simulate a cell (once more if Prefect's API server did not start); its status."""
    status = ""
    for attempt in (1, 2):
        try:
            return _simulate_cell(cell, state if attempt == 1 else cell_state(cell))
        except Exception as e:  # noqa: BLE001 - one failed cell must not stop the study
            status = failure(e)
            if PREFECT_START_FAILED not in str(e):
                break
            say(f"{cell.run_id}: {status}" + ("; trying once more" if attempt == 1 else ""))
    return status


def _simulate_cell(cell: Cell, state: dict) -> str:
    if state["status"] == "complete":  # stopped between finishing and analysing
        from steertown.analysis.report import write_report
        from steertown.analysis.summary import analyze_run

        analyze_run(cell.run_dir)
        write_report(cell.run_dir, Path(cell.config["reports_dir"]))
        return "complete (analysed now)"
    from flows.pipeline import run_flow  # Prefect starts only when a cell needs a run

    run_flow(cell.config)
    return ("complete" if state["status"] == "new"
            else f"complete (resumed from tick {state['ticks_done']})")


def verification_record(spec: StudySpec, cell: Cell) -> dict | None:
    """The recorded verification of this cell's finished run, or None."""
    path = spec.state_dir / "verify" / f"{cell.run_id}.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("finished") == cell_state(cell).get("finished") else None


def verify_command(spec: StudySpec, cell: Cell) -> list[str]:
    """`steertown verify` through its public entry point, in a fresh process."""
    return [sys.executable, "-m", "steertown", "verify", str(cell.run_dir), *spec.verify_args]


def verify_stage(spec: StudySpec, say=print) -> dict[str, str]:
    """Verify every complete, not yet verified cell; return {run_id: verdict or status}."""
    cells = spec.cells()
    todo = [c for c in cells if cell_state(c)["status"] == "complete"
            and verification_record(spec, c) is None]
    say(f"Study {spec.name}: verify {len(todo)} of {len(cells)} cells "
        f"(`{' '.join(['steertown verify RUN_DIR', *spec.verify_args])}`)")
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    out: dict[str, str] = {}
    spent, n_run = 0.0, 0
    for i, cell in enumerate(cells, 1):
        t0 = time.perf_counter()
        rec = verification_record(spec, cell)
        if cell_state(cell)["status"] != "complete":
            status = "not simulated yet"
        elif rec is not None:
            status = f"verified earlier: {rec['verdict']}"
        else:
            rec = _verify_cell(spec, cell, env)
            spent += rec["seconds"]
            n_run += 1
            status = (f"{rec['verdict']}" if rec["recorded"]
                      else f"failed (exit {rec['exit_code']}, no verdict; retried next time)")
        out[cell.run_id] = status
        left = sum(1 for c in todo if cells.index(c) >= i)  # todo cells after this one
        say(f"[verify {i}/{len(cells)}] {cell.run_id}: {status} "
            f"({_duration(time.perf_counter() - t0)}) | {left} verifications left, "
            + eta_text(left * spent / n_run if n_run else (0.0 if not left else None)))
    return out


def _verify_cell(spec: StudySpec, cell: Cell, env: dict) -> dict:
    log_dir = spec.state_dir / "verify"
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lines: list[str] = []
    with open(log_dir / f"{cell.run_id}.log", "w") as log:
        proc = subprocess.Popen(verify_command(spec, cell), cwd=PROJECT_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:  # shown as it comes, kept for the verdict and the log
            log.write(line)
            lines.append(line.rstrip("\n"))
            print(f"    {line}", end="", flush=True)
        code = proc.wait()
    verdicts = [m.group(1) for m in map(VERDICT.search, lines) if m]
    rec = {"run_id": cell.run_id, "verdict": verdicts[-1] if verdicts else None,
           "exit_code": code, "command": verify_command(spec, cell)[2:],
           "seconds": round(time.perf_counter() - t0, 1),
           "finished": cell_state(cell).get("finished"),
           "verified": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "recorded": bool(verdicts)}
    if rec["recorded"]:  # only a verification that reached its verdict counts as done
        atomic_write_json(log_dir / f"{cell.run_id}.json", rec)
    return rec


def complete_cells(spec: StudySpec) -> list[Cell]:
    """The cells whose runs are complete and analysed (what the results are computed from)."""
    return [c for c in spec.cells() if (s := cell_state(c))["status"] == "complete"
            and s["analysed"]]


def analyze_stage(spec: StudySpec, say=print) -> Path:
    """The study's results files from its complete cells; returns results.md's path."""
    from steertown.analysis.study_results_report import write_results

    cells = spec.cells()
    verdicts = {c.run_id: (verification_record(spec, c) or {}).get("verdict") for c in cells}
    planned = [{"run_id": c.run_id, "arm": c.arm, "seed": c.seed,
                "mode": c.steering_mode, "dir": str(c.run_dir),
                "complete": c in complete_cells(spec), "verdict": verdicts[c.run_id]}
               for c in cells]
    path = write_results(spec.name, planned, spec.results_dir, data_dir=spec.data_dir,
                         command=stage_command(spec, "analyze"))
    say(f"Results: {path}")
    return path


def stage_command(spec: StudySpec, stage: str) -> str:
    """The command that regenerates a stage's files, as the user would type it."""
    data = f" --data-dir {spec.data_dir}" if spec.data_dir else ""
    return f"python flows/study.py {shown_path(spec.folder or spec.results_dir)}{data} --stage {stage}"


def shown_path(path: Path | None) -> str:
    """A path as the user would type it: relative to the project root when inside it."""
    if path is None:
        return "."
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
