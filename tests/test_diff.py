"""`steertown diff`: first divergent tick, differing actions per tick, outcomes, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_fork import fork, parent_config, run_all

from steertown.analysis.diff import diff_chart, diff_runs, first_divergence, write_diff
from steertown.cli import main as cli
from steertown.storage.run_dir import RunDir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diff")
    parent = run_all(parent_config(tmp, steps=10))
    same = fork(parent, 4, run_id="same")
    changed = fork(parent, 6, "steering.agents.agent-002.E=1.0", "steering.agents.agent-005.E=1.0",
                   "steering.strength=3.0", run_id="changed")
    return tmp, parent, same, changed


def test_identical_runs_have_no_divergence(runs):
    _, parent, same, _ = runs
    d = diff_runs(parent, same)
    assert d["first_divergent_tick"] is None and d["differing_actions"] == 0
    assert all(r["share_differing"] == 0 for r in d["per_tick"])
    assert len(d["per_tick"]) == 10
    assert all(o["b_minus_a"] == 0 for o in d["outcomes"] if o["b_minus_a"] is not None)
    assert d["relation"] == "same is a fork of parent at tick 4"


def test_fork_diff_starts_at_t_and_sets_outcomes_side_by_side(runs):
    _, parent, _, changed = runs
    d = diff_runs(parent, changed)
    assert d["first_divergent_tick"] >= 6
    by_tick = {r["tick"]: r for r in d["per_tick"]}
    assert all(by_tick[t]["differing"] == 0 for t in range(1, 6))
    assert sum(by_tick[t]["differing"] for t in range(6, 11)) > 0
    assert d["differing_actions"] == sum(r["differing"] for r in d["per_tick"])
    metrics = {o["metric"]: o for o in d["outcomes"]}
    assert {"society.density", "society.gini_coins", "agents.mean_coins"} <= set(metrics)
    assert any(k.endswith(f"_from_t{d['first_divergent_tick']}") for k in metrics)
    assert d["fork_changes"]["steering.strength"] == {"from": 1.0, "to": 3.0}
    # Reversing the arguments mirrors the sides.
    r = diff_runs(changed, parent)
    assert r["first_divergent_tick"] == d["first_divergent_tick"]
    assert {o["metric"]: o["a"] for o in r["outcomes"]} == {o["metric"]: o["b"]
                                                            for o in d["outcomes"]}


def test_runs_of_different_length_diverge_where_one_ends(tmp_path):
    short = run_all(parent_config(tmp_path, steps=4, run_id="short"))
    long = run_all(parent_config(tmp_path, steps=6, run_id="long"))
    assert first_divergence(short, long) == (5, "ticks")


def test_chart_marks_the_first_divergence(runs):
    _, parent, _, changed = runs
    spec = diff_chart(diff_runs(parent, changed)).to_dict()
    assert len(spec["layer"]) == 2 and spec["layer"][1]["mark"]["type"] == "rule"


def test_cli_diff_stores_in_both_runs_and_both_reports_show_it(runs, capsys):
    tmp, parent, _, changed = runs
    assert cli(["diff", str(parent), str(changed), "--reports-dir", str(tmp / "reports")]) == 0
    out = capsys.readouterr().out
    assert "first divergent tick:" in out and "society.density" in out
    for run, other in ((parent, "changed"), (changed, "parent")):
        stored = json.loads((run / "analysis" / "diffs" / f"{other}.json").read_text())
        assert stored["first_divergent_tick"] >= 6
        page = (tmp / "reports" / run.name / "index.html").read_text()
        assert "Diffs against other runs" in page and "First divergent tick" in page
        assert (tmp / "reports" / run.name / f"diff_{other}.png").is_file()


def test_a_forks_report_diffs_against_its_parent_unasked(runs):
    tmp, _, same, _ = runs
    from steertown.analysis.report import write_report

    page = write_report(same, tmp / "reports2").read_text()
    assert "same is a fork of parent at tick 4" in page
    assert "No tick differs" in page


def test_bad_diff_input_is_one_line(tmp_path, capsys):
    assert cli(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and err.count("\n") == 1


def test_write_diff_overwrites_an_old_diff(runs):
    _, parent, same, _ = runs
    path = Path(parent) / "analysis" / "diffs" / "same.json"
    write_diff(parent, same)
    assert json.loads(path.read_text())["run_b"] == "same"
    assert RunDir(same).read_manifest()["fork"]["at"] == 4


def test_one_changed_action_counts_once_at_its_tick(runs, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from steertown.storage.run_dir import atomic_write_parquet

    _, parent, _, _ = runs
    edited = tmp_path / "edited"
    shutil.copytree(parent, edited)
    f = RunDir(edited).tick_file("actions", 3)
    t = pq.read_table(f)
    kinds = t.column("action_type").to_pylist()
    kinds[0] = "WORK" if kinds[0] != "WORK" else "REST"
    atomic_write_parquet(f, t.set_column(t.column_names.index("action_type"), "action_type",
                                         pa.array(kinds)))
    d = diff_runs(parent, edited)
    assert (d["first_divergent_tick"], d["first_divergent_table"]) == (3, "actions")
    by_tick = {r["tick"]: r for r in d["per_tick"]}
    assert by_tick[3]["differing"] == 1 and d["differing_actions"] == 1
    assert by_tick[3]["share_differing"] == pytest.approx(1 / len(kinds))
