"""Study effect sizes (analysis.study): steering against controls, paired by seed (mock)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_fork import parent_config, run_all

from steertown.analysis.fingerprint import agent_rates
from steertown.analysis.study import study_effects, write_study_report


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    dirs = {}
    for mode in ("vectors", "placebo"):
        for seed in (1, 2):
            dirs[(mode, seed)] = run_all(parent_config(
                tmp, run_id=f"{mode}-s{seed}", seed=seed, population=24, steps=12,
                max_events_per_tick=10, steering={"mode": mode, "spread": 0.8}))
    return tmp, dirs


def _slope(run_dir, trait, measure):
    rates = agent_rates(run_dir).to_pydict()
    pts = [(x, y) for x, y in zip(rates[trait], rates[measure], strict=True) if y is not None]
    return np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)[0]


def test_effects_are_paired_slope_differences(grid):
    _, dirs = grid
    result = study_effects(list(dirs.values()))
    row = next(r for r in result["effects"]
               if (r["control"], r["trait"], r["measure"]) == ("placebo", "E", "p_talk"))
    per_seed = [_slope(dirs[("vectors", s)], "E", "p_talk")
                - _slope(dirs[("placebo", s)], "E", "p_talk") for s in (1, 2)]
    assert row["effect"] == pytest.approx(np.mean(per_seed))
    assert row["n"] == 2 and row["seeds"] == [1, 2] and row["hypothesis"]
    half = 12.706 * np.std(per_seed, ddof=1) / np.sqrt(2)  # t(0.975, 1 df)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((np.mean(per_seed) - half,
                                                             np.mean(per_seed) + half), rel=1e-3)
    # The mock steers E -> talk on the trait vectors only: the effect is positive.
    assert row["effect"] > 0.05
    modes = {(r["mode"], r["trait"], r["measure"]): r for r in result["slopes"]}
    assert modes[("vectors", "E", "p_talk")]["mean"] > modes[("placebo", "E", "p_talk")]["mean"]
    assert {r["control"] for r in result["effects"]} == {"placebo"}


def test_one_run_per_cell(grid):
    _, dirs = grid
    with pytest.raises(ValueError, match="share arm, mode and seed"):
        study_effects([dirs[("vectors", 1)], dirs[("vectors", 1)]])


def test_study_report_is_offline_html_with_the_effects(grid):
    tmp, dirs = grid
    page = write_study_report(study_effects(list(dirs.values())), tmp / "report")
    html = page.read_text()
    assert "Effect of steering against each control" in html and "vegaEmbed(" in html
    assert "<script src=" not in html  # no CDN: everything inline
    stored = json.loads((tmp / "report" / "effects.json").read_text())
    assert len(stored["runs"]) == 4 and (tmp / "report" / "effects.png").is_file()
    assert "p_talk" in (tmp / "report" / "effects.csv").read_text()


def test_steertown_compare_gives_the_effects_of_tracked_runs(grid, capsys):
    from steertown.cli import main as cli
    from steertown.storage.run_dir import RunDir
    from steertown.tracking import RunTracker

    tmp, dirs = grid
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    for d in dirs.values():
        m = RunDir(d).read_manifest()
        tracker = RunTracker(uri, "study-test")
        tracker.start(m["config"], m)
        tracker.end("FINISHED")
    assert cli(["compare", "--runs", *(d.name for d in dirs.values()), "--tracking-uri", uri,
                "--out", str(tmp / "compare")]) == 0
    out = capsys.readouterr().out
    assert "custom/placebo" in out and "custom/vectors" in out
    assert "Effects of steering against each control (paired by seed)" in out
    assert "| custom | placebo | E | p_talk |" in out
    assert (tmp / "compare" / "effects" / "index.html").is_file()
