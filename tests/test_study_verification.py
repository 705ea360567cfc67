"""The study results' verification summary, read from each cell's verify report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from steertown.analysis.study_results import verification_rows
from steertown.analysis.study_results_report import (
    VERIFICATION_COLUMNS,
    _verification_lines,
    csv_bytes,
)

TRAITS = "EACON"


def _report(run: Path, verdict_checks: dict[str, bool], tv: float, tv_random: float) -> None:
    checks = [{"name": n, "passed": ok, "required": True, "figure": "", "detail": "",
               "data": {"tv": tv, "tv_ci_low": tv - 0.04, "tv_ci_high": tv + 0.04,
                        "tv_random": tv_random} if n == "decisions.changed" else {}}
              for n, ok in verdict_checks.items()]
    (run / "verification").mkdir(parents=True)
    (run / "verification" / "report.json").write_text(json.dumps({"checks": checks}))


def _cells(tmp_path: Path) -> list[dict]:
    good = {"decisions.replay": True, "decisions.changed": True,
            **{f"decisions.{t}": True for t in TRAITS}}
    bad = {**good, "decisions.changed": False, "decisions.E": False, "decisions.A": False}
    cells = []
    for mode, checks, verdict, tv in (("vectors", good, "PASS", 0.236),
                                      ("placebo", bad, "FAIL", 0.155),
                                      ("prompt", good, None, 0.0)):  # never verified
        run = tmp_path / mode
        _report(run, checks, tv, 0.160)
        cells.append({"run_id": f"s-{mode}-s1", "seed": 1, "mode": mode, "dir": str(run),
                      "verdict": verdict})
    return cells


def test_verification_rows_read_each_verified_cells_report(tmp_path):
    rows = {r["mode"]: r for r in verification_rows(_cells(tmp_path))}
    assert set(rows) == {"vectors", "placebo"}  # the unverified cell has no row
    assert rows["vectors"]["traits_passed"] == 5 and rows["vectors"]["failed"] == ""
    assert rows["placebo"]["traits_passed"] == 3 and rows["placebo"]["traits_checked"] == 5
    assert rows["placebo"]["failed"] == "decisions.changed decisions.E decisions.A"
    assert rows["vectors"]["tv"] == 0.236 and rows["vectors"]["tv_random"] == 0.160


def test_verification_lines_and_csv_say_what_each_mode_got(tmp_path):
    rows = verification_rows(_cells(tmp_path))
    text = "\n".join(_verification_lines(rows, 3))
    assert "2 of 3 cells verified" in text
    assert ("vectors (1 cells): PASS 1; mean TV own 0.236 vs random 0.160; trait checks "
            "passed 5 of 5") in text
    assert "placebo (1 cells): FAIL 1" in text
    assert "failed: decisions.A, decisions.E, decisions.changed" in text
    assert "none of the 3 cells verified" in "\n".join(_verification_lines([], 3))
    parsed = list(csv.DictReader(csv_bytes(rows, VERIFICATION_COLUMNS).decode().splitlines()))
    assert [r["verdict"] for r in parsed] == ["PASS", "FAIL"]
