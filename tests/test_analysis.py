"""analyze_run, charts and show on a synthetic run with hand-computed answers."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from synthetic_run import ACTIONS, AGENTS, build_run

from steertown.analysis.charts import CHART_NAMES, draw_charts
from steertown.analysis.show import show_table
from steertown.analysis.summary import analyze_run
from steertown.cli import main
from steertown.config import ConfigError
from steertown.storage.run_dir import RunDirError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def summary(run):
    return analyze_run(run)


def test_summary_written_and_counts(run, summary):
    on_disk = json.loads((run / "analysis" / "summary.json").read_text())
    assert on_disk["counts"] == summary["counts"]
    assert summary["counts"] == {"agents": 4, "actions": 11, "messages": 12, "reflections": 1,
                                 "ticks": 3}
    dist = {r["action_type"]: r["count"] for r in summary["action_distribution"]}
    assert dist == {"TALK": 2, "WORK": 4, "MOVE": 2, "REST": 3}
    assert sum(r["share"] for r in summary["action_distribution"]) == pytest.approx(1.0)


def test_activity_and_tokens(summary):
    act = {r["agent_id"]: r for r in summary["agent_activity"]["per_agent"]}
    assert {a: r["actions"] for a, r in act.items()} == {"a0": 3, "a1": 3, "a2": 2, "a3": 3}
    assert act["a0"]["messages"] == 4  # three actions and one reflection
    by_type = {r["action_type"]: r for r in summary["tokens"]["by_action_type"]}
    assert {k: r["tokens_out"] for k, r in by_type.items()} == {
        "TALK": 80, "WORK": 80, "MOVE": 20, "REST": 15}
    assert summary["tokens"]["totals"]["tokens_in"] == 11 * 100 + 200
    assert summary["tokens"]["totals"]["tokens_out"] == 195 + 30
    kinds = {r["kind"]: r["messages"] for r in summary["tokens"]["by_kind"]}
    assert kinds == {"action": 11, "reflection": 1}
    assert [r["tokens_out"] for r in summary["tokens"]["by_tick"]] == [75, 85, 65]


def test_success_rates(summary):
    s = summary["success"]
    assert s["overall_rate"] == pytest.approx(9 / 11, abs=1e-6)
    rates = {r["action_type"]: r["rate"] for r in s["by_action_type"]}
    assert rates == pytest.approx({"TALK": 1.0, "WORK": 0.75, "MOVE": 1.0, "REST": 2 / 3}, abs=1e-6)
    # E bands: a0 (0.8) and a3 (0.5) high, a2 (0.0) mid, a1 (-0.8) low.
    e = {r["band"]: r for r in s["by_trait_band"] if r["trait"] == "E"}
    assert (e["high"]["agents"], e["high"]["n"], e["high"]["successes"]) == (2, 6, 5)
    assert (e["mid"]["n"], e["mid"]["successes"]) == (2, 1)
    assert (e["low"]["n"], e["low"]["rate"]) == (3, 1.0)
    assert {(r["action_type"], r["failure_reason"]) for r in s["failure_reasons"]} == {
        ("REST", "busy"), ("WORK", "unparseable")}


def test_temporal_and_timings(summary):
    ticks = summary["temporal"]["by_tick"]
    assert [r["actions"] for r in ticks] == [4, 4, 3]
    assert [r["messages"] for r in ticks] == [4, 4, 4]
    moves = {(m["from"], m["to"]): m["count"] for m in summary["temporal"]["moves"]}
    assert moves == {("square", "cafe"): 1, ("square", "park"): 1}
    t = summary["timings"]
    assert t["total_tick_seconds"] == pytest.approx(9.0)
    assert t["mean_tick_seconds"] == pytest.approx(3.0)
    assert t["model_seconds_share"] == pytest.approx(5.5 / 9, abs=1e-6)


def test_steering_profiles(summary):
    st = summary["steering"]
    assert st["presence"]["nonzero_share"] == 1.0
    assert st["presence"]["agents_steered"] == 4
    assert st["presence"]["layers"] == [16]
    traits = {r["trait"]: r for r in st["traits"]}
    e_values = [v[0] for v in AGENTS.values()]
    assert traits["E"]["assigned_mean"] == pytest.approx(sum(e_values) / 4)
    assert traits["E"]["logged_mean"] == pytest.approx(sum(e_values) / 4)
    assert traits["E"]["assigned_variance"] == pytest.approx(stats.tvar(e_values) * 3 / 4, abs=1e-6)
    prof = {r["agent_id"]: r for r in st["profiles"]}
    assert prof["a1"]["alpha_C"] == pytest.approx(0.8)


def test_behaviour_correlations_match_scipy(summary):
    agents = sorted(AGENTS)
    counts = {a: {} for a in agents}
    for acts in ACTIONS.values():
        for a, t, *_ in acts:
            counts[a][t] = counts[a].get(t, 0) + 1
    hyp = {(h["action_type"], h["trait"]): h for h in summary["behaviour_vs_trait"]["hypotheses"]}
    for action, trait_i, trait in [("TALK", 0, "E"), ("WORK", 2, "C"), ("REST", 4, "N")]:
        share = [counts[a].get(action, 0) / sum(counts[a].values()) for a in agents]
        value = [AGENTS[a][trait_i] for a in agents]
        h = hyp[(action, trait)]
        assert h["spearman"] == pytest.approx(stats.spearmanr(share, value).statistic, abs=1e-5)
        assert h["pearson"] == pytest.approx(stats.pearsonr(share, value).statistic, abs=1e-5)
    assert summary["key_metrics"]["spearman_WORK_C"] == pytest.approx(hyp[("WORK", "C")]["spearman"])


def test_text_quality(summary):
    tq = summary["text_quality"]
    assert tq["free_text_lines"] == 6
    assert tq["usable_share"] == pytest.approx(0.5)
    assert tq["labels"] == {"ok": 3, "garbage": 1, "repeat": 1, "template_leak": 1}
    by = {(r["action_type"], r["label"]): r["count"] for r in tq["by_action_type"]}
    assert by == {("TALK", "ok"): 1, ("TALK", "repeat"): 1, ("WORK", "ok"): 2,
                  ("WORK", "template_leak"): 1, ("WORK", "garbage"): 1}
    assert tq["talk_when_met"] == {"decisions": 3, "talks": 2, "share": pytest.approx(2 / 3)}
    km = summary["key_metrics"]
    assert km["usable_text_share"] == pytest.approx(0.5)
    assert km["talk_share_when_met"] == pytest.approx(2 / 3, abs=1e-6)


def test_charts_written(run, tmp_path):
    charts = draw_charts(run, tmp_path)
    assert set(charts) == set(CHART_NAMES)
    for name in CHART_NAMES:
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_show_filters_and_sql(run):
    out = show_table(run, "actions", tick=2, agent="a2")
    assert "unparseable" in out and "(1 row)" in out
    out = show_table(run, "messages", limit=2)
    assert "(2 rows of 12)" in out
    out = show_table(run, "messages", sql="SELECT kind, count(*) AS n FROM messages GROUP BY 1 ORDER BY 1")
    assert "reflection" in out and "11" in out
    with pytest.raises(ConfigError, match="unknown table"):
        show_table(run, "nope")
    with pytest.raises(ConfigError, match="--sql"):
        show_table(run, "messages", sql="SELECT missing_column FROM messages")
    with pytest.raises(ConfigError, match="no tick"):
        show_table(run, "agents", tick=1)


def test_cli_show_and_errors(run, capsys, tmp_path):
    assert main(["show", str(run), "--table", "ticks"]) == 0
    assert "tick_seconds" in capsys.readouterr().out
    assert main(["show", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_foreign_parquet_is_a_run_dir_error(tmp_path):
    run = build_run(tmp_path)
    pq.write_table(pa.table({"x": [1]}), run / "actions" / "actions_t00004.parquet")
    with pytest.raises(RunDirError, match="actions"):
        analyze_run(run)


def test_empty_run_analyses(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run_id": "empty", "status": "running"}))
    s = analyze_run(run)
    assert s["counts"]["actions"] == 0 and s["success"]["overall_rate"] is None
    draw_charts(run, tmp_path / "charts")  # placeholders, not a vl-convert error
    assert all((tmp_path / "charts" / f"{n}.png").stat().st_size > 500 for n in CHART_NAMES)
