"""`python flows/study.py --reproduce studies/<name> --seed S --mode M`: re-run one cell of
a study from scratch into a temporary directory and compare it with the recorded cell.

Compared: every per-tick table row, exactly (the first divergent tick,
`analysis.diff.first_divergence`); the key metrics of `analysis/summary.json` (timings left
out: wall-clock is not a result) and the cell's slopes (the study's `slopes.csv` when it
lists the cell, else the recorded run's slopes recomputed) to a relative tolerance of
ANALYSIS_REL_TOL. The rows are the run; the metrics are sums over them, and a change in
summation order (a rewritten bootstrap, another numpy) moves their last digits (~1e-16
relative) without any row changing. Any difference prints what differed and exits 1.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import shutil
import tempfile
from pathlib import Path

from steertown.analysis.study import run_slopes
from steertown.config import ConfigError
from steertown.storage.run_dir import RunDir

TIMING_MARKERS = ("seconds",)  # key metrics that measure the machine, not the town
# Four orders of magnitude above float64 summation-order noise, far below any real change.
ANALYSIS_REL_TOL = 1e-12


def result_metrics(run_dir: Path) -> dict[str, float]:
    """The key metrics of the run's summary.json, timings left out."""
    summary = json.loads((run_dir / "analysis" / "summary.json").read_text())
    return {k: v for k, v in summary["key_metrics"].items()
            if not any(m in k for m in TIMING_MARKERS)}


def recorded_slopes(results_dir: Path | None, run_id: str, run_dir: Path
                    ) -> tuple[dict[tuple[str, str], float | None], str]:
    """{(trait, measure): slope} of the cell as recorded, and where it was read from."""
    path = (results_dir / "slopes.csv") if results_dir else None
    if path and path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["run_id"] == run_id]
        if rows:
            return ({(r["trait"], r["measure"]): (float(r["slope"]) if r["slope"] else None)
                     for r in rows}, str(path))
    return run_slopes(run_dir), f"{run_dir} (recomputed: slopes.csv does not list the cell)"


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=ANALYSIS_REL_TOL, abs_tol=ANALYSIS_REL_TOL)


def compare_cell(recorded_dir: Path, new_dir: Path, slopes_then: dict,
                 slopes_where: str) -> list[str]:
    """What differs between the recorded cell and its re-run (empty: identical)."""
    from steertown.analysis.diff import first_divergence

    problems = []
    old, new = result_metrics(recorded_dir), result_metrics(new_dir)
    for k in sorted(set(old) | set(new)):
        if not _same(old.get(k), new.get(k)):
            problems.append(f"summary {k}: recorded {old.get(k)!r}, re-run {new.get(k)!r}")
    slopes_now = run_slopes(new_dir)
    for k in sorted(set(slopes_then) | set(slopes_now)):
        if not _same(slopes_then.get(k), slopes_now.get(k)):
            problems.append(f"slope {k[0]} -> {k[1]}: recorded {slopes_then.get(k)!r} "
                            f"({slopes_where}), re-run {slopes_now.get(k)!r}")
    first = first_divergence(recorded_dir, new_dir)
    if first:
        problems.append(f"rows: first difference at tick {first[0]} in table {first[1]}")
    return problems


def reproduce(study_dir: Path, seed: int, mode: str, data_dir: Path | None = None,
              results_dir: Path | None = None, keep: bool = False) -> int:
    """Re-run the cell (seed, mode) from scratch and compare; 0 if identical, else 1."""
    from flows.environment import PROJECT_ROOT
    from flows.study_spec import load_study
    from flows.study_stages import cell_state

    spec = load_study(study_dir, data_dir, results_dir)
    cell = spec.find(seed, mode)
    state = cell_state(cell)
    if state["status"] != "complete" or not state["analysed"]:
        raise ConfigError(f"--seed/--mode: cell {cell.run_id} is not complete in "
                          f"{cell.run_dir.parent}; nothing recorded to reproduce")
    slopes_then, where = recorded_slopes(spec.results_dir, cell.run_id, cell.run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"reproduce-{cell.run_id}-"))
    config = copy.deepcopy(cell.config)
    config.update(storage_dir=str(tmp / "dumps"), reports_dir=str(tmp / "reports"),
                  resume=False, overwrite=False)
    config["tracking"]["enabled"] = False  # a check, not a run of the study
    from steertown.sim.runner import git_sha

    then, now = RunDir(cell.run_dir).read_manifest().get("git_sha"), git_sha(PROJECT_ROOT)
    print(f"Reproducing {cell.run_id} from scratch in {tmp} (code: recorded at {then}, "
          f"now {now}" + ("" if then == now else "; the code differs, so may the rows") + ")")
    try:
        from flows.pipeline import run_flow

        run_flow(config)
        new_dir = RunDir(tmp / "dumps" / cell.run_id).path
        problems = compare_cell(cell.run_dir, new_dir, slopes_then, where)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        print(f"NOT REPRODUCED: {cell.run_id}: {len(problems)} differences")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"REPRODUCED: {cell.run_id}: every row equal; key metrics and slopes ({where}) "
          f"equal to {ANALYSIS_REL_TOL:g} relative")
    return 0
