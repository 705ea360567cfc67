"""Society analysis: DuckDB queries over the new tables agree with the engine's state."""

from __future__ import annotations

from pathlib import Path

import pytest

from steertown.analysis import society
from steertown.config_loading import load_config
from steertown.inference import get_backend, get_embedder
from steertown.sim.checkpoint import load_latest
from steertown.sim.engine import Simulation
from steertown.sim.runner import prepare_run, run_chunk
from steertown.storage.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("society")
    cfg = load_config({"model": {"name": "mock"}, "memory": {"embedder": "hashing"},
                       "population": 20, "steps": 30, "checkpoint_every": 10,
                       "run_id": "soc", "storage_dir": str(tmp),
                       "steering": {"coefficients": {"E": 0.6, "A": 0.4}},
                       "world": {"log_prompts": True}})
    plan = prepare_run(cfg, ROOT)
    for s, e in plan.chunks:
        run_chunk(cfg, plan.run_dir, s, e, get_backend(cfg), get_embedder("hashing"))
    sim = Simulation(cfg, get_backend(cfg), get_embedder("hashing"), "soc")
    assert load_latest(sim, RunDir(plan.run_dir)) == 30
    return Path(plan.run_dir), sim


def test_ties_rebuilt_from_interactions_equal_the_engines(run):
    run_dir, sim = run
    con = society.connect(run_dir)
    got = {(r["a"], r["b"]): r["weight"] for r in society.final_ties(con)}
    want = {(a, b): w for a, b, w in sim.ties.edges()}
    assert got.keys() == want.keys() and want
    assert all(got[k] == pytest.approx(want[k]) for k in want)


def test_outcomes_and_summary_match_the_last_tick(run):
    run_dir, sim = run
    con = society.connect(run_dir)
    out = {r["agent_id"]: r for r in society.agent_outcomes(con)}
    for a in sim.agents:
        assert (out[a.agent_id]["coins"], out[a.agent_id]["energy"]) == (a.coins, a.energy)
        assert out[a.agent_id]["knows_news"] == a.knows_news
    s = society.society_summary(con)
    assert s["final"]["tick"] == 30 and s["final"]["tie_edges"] == len(sim.ties.weights)
    assert s["interactions"]["TALK"] > 0 and s["replies"] > 0
    assert len(s["outcomes_by_trait"]) == 15
    m = society.society_metrics(s)
    assert m["society_news_reach"] == pytest.approx(
        sum(a.knows_news for a in sim.agents) / len(sim.agents), abs=1e-6)


def test_messages_carry_memory_ids_prompt_hash_and_prompt(run):
    run_dir, _ = run
    con = society.connect(run_dir)
    bad = con.execute("""
        SELECT count(*) FROM (SELECT m.agent_id, unnest(m.memory_ids) AS mid, m.tick
                              FROM messages m) x
        LEFT JOIN memories y ON x.agent_id = y.agent_id AND x.mid = y.memory_id
        WHERE y.memory_id IS NULL OR y.tick >= x.tick""").fetchone()[0]
    assert bad == 0  # every retrieved id is a memory stored before the generation
    n, hashed, prompted = con.execute("""SELECT count(*), count(prompt_hash),
        count_if(prompt LIKE 'You are %') FROM messages""").fetchone()
    assert n == hashed == prompted > 0
    assert con.execute("SELECT count(*) FROM messages WHERE len(memory_ids) > 0").fetchone()[0]


def test_society_charts_are_drawn(run, tmp_path):
    run_dir, _ = run
    charts = society.draw_society_charts(run_dir, tmp_path)
    assert set(charts) == set(society.CHART_NAMES)
    assert all((tmp_path / f"{n}.png").stat().st_size > 1000 for n in charts)


def test_summary_and_report_carry_the_society(run, tmp_path):
    from steertown.analysis.report import write_report
    from steertown.analysis.summary import analyze_run

    run_dir, sim = run
    summary = analyze_run(run_dir)
    km = summary["key_metrics"]
    assert km["society_news_reach"] == pytest.approx(
        sum(a.knows_news for a in sim.agents) / len(sim.agents), abs=1e-6)
    assert km["society_talk_count"] > 0
    page = write_report(run_dir, tmp_path, summary=summary)
    html = page.read_text()
    assert 'id="society"' in html
    assert (page.parent / "ties_network.png").is_file()
