"""Behavioural fingerprint: per-agent rates from a run's decisions and actions, vs traits.

The mock backend makes E raise TALK and C raise WORK (its documented stand-in for
steering), so a mock run has known signs to find; hand-written tables check the
arithmetic of each rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steertown.analysis.fingerprint import agent_rates, fingerprint, fingerprint_metrics
from steertown.config_loading import load_config
from steertown.sim.runner import prepare_run, run_chunk
from steertown.storage.run_dir import RunDir, atomic_write_parquet
from steertown.storage.schema import option_class
from tests.synthetic_run import build_run

ROOT = Path(__file__).resolve().parent.parent


def mock_run(tmp_path: Path, population: int = 16, steps: int = 30) -> Path:
    from steertown.inference import get_backend, get_embedder

    cfg = load_config({"model": {"name": "mock"}, "memory": {"embedder": "hashing"},
                       "population": population, "steps": steps, "checkpoint_every": steps,
                       "max_events_per_tick": population, "run_id": "fp",
                       "storage_dir": str(tmp_path / "dumps"), "steering": {"spread": 0.8}})
    plan = prepare_run(cfg, ROOT)
    for s, e in plan.chunks:
        run_chunk(cfg, plan.run_dir, s, e, get_backend(cfg), get_embedder("hashing"))
    return Path(plan.run_dir)


def test_option_class_is_the_first_word():
    assert [option_class(o) for o in ("Talk Ben:", "Move town_square", "Work:", "Rest",
                                      "Invite Ann to cafe", "")] == \
        ["talk", "move", "work", "rest", "invite", ""]


def build_run_without_decisions(tmp_path: Path) -> Path:
    """The synthetic run with its decisions table removed (the tests write their own)."""
    import shutil

    run = build_run(tmp_path)
    shutil.rmtree(RunDir(run).table_dir("decisions"), ignore_errors=True)
    return run


def test_rates_are_conditional_on_the_option_being_offered(tmp_path):
    import pyarrow as pa

    from steertown.storage.schema import DECISIONS

    run = build_run_without_decisions(tmp_path)
    base = {"run_id": "synth", "system": "s", "user": "u", "prompt_hash": "h",
            "option_logprob": -0.1, "seed": 0, **{f"alpha_{t}": 0.0 for t in "EACON"}}
    rows = [  # a0: talk offered twice, chosen once; work offered 3x, chosen twice
        {**base, "tick": 1, "event_id": 0, "agent_id": "a0",
         "options": ["Talk A1:", "Work:", "Rest"], "chosen_option": "Talk A1:"},
        {**base, "tick": 2, "event_id": 0, "agent_id": "a0",
         "options": ["Talk A1:", "Work:", "Rest"], "chosen_option": "Work:"},
        {**base, "tick": 3, "event_id": 0, "agent_id": "a0",
         "options": ["Move park", "Work:", "Rest"], "chosen_option": "Work:"},
        {**base, "tick": 1, "event_id": 1, "agent_id": "a1",
         "options": ["Move park", "Move cafe", "Work:", "Rest"], "chosen_option": "Move cafe"},
    ]
    atomic_write_parquet(RunDir(run).tick_file("decisions", 1),
                         pa.Table.from_pylist(rows, schema=DECISIONS))
    t = agent_rates(run)
    assert t.schema.metadata[b"rates"] == b"conditional"
    r = {row["agent_id"]: row for row in t.to_pylist()}
    assert r["a0"]["p_talk"] == pytest.approx(0.5)
    assert r["a0"]["p_work"] == pytest.approx(2 / 3)
    assert r["a0"]["p_rest"] == 0.0 and r["a0"]["p_move"] == 0.0
    assert r["a0"]["decisions"] == 3
    assert r["a1"]["p_move"] == 1.0  # two Move options offered once = one opportunity
    assert r["a1"]["p_talk"] is None  # never offered: no rate, not 0
    assert r["a2"]["p_work"] is None and r["a2"]["decisions"] is None  # no decisions at all
    # places from the actions table: a0 was at square and moved to park
    assert r["a0"]["places_visited"] == 2 and r["a2"]["places_visited"] == 2


def test_rates_fall_back_to_action_shares_without_decisions(tmp_path):
    t = agent_rates(build_run_without_decisions(tmp_path))
    assert t.schema.metadata[b"rates"] == b"shares"
    r = {row["agent_id"]: row for row in t.to_pylist()}
    assert r["a1"]["p_work"] == 1.0 and r["a0"]["p_talk"] == pytest.approx(2 / 3)


def test_outcomes_come_from_the_last_agent_state_row(tmp_path):
    import pyarrow as pa

    run = build_run(tmp_path)
    for tick, coins in ((1, 3), (3, 7)):
        atomic_write_parquet(
            RunDir(run).path / "agent_state" / f"agent_state_t{tick:05d}.parquet",
            pa.table({"tick": [tick, tick], "agent_id": ["a0", "a1"], "coins": [coins, 1],
                      "mood": ["ok", "ok"]}))
    r = {row["agent_id"]: row for row in agent_rates(run).to_pylist()}
    assert r["a0"]["final_coins"] == 7 and r["a1"]["final_coins"] == 1
    assert "final_mood" not in r["a0"]  # not numeric: not a measure


def test_fingerprint_finds_the_mock_backends_trait_effects(tmp_path):
    run = mock_run(tmp_path)
    rates = agent_rates(run)
    assert rates.num_rows == 16 and rates.schema.metadata[b"rates"] == b"conditional"
    rows = fingerprint(run, n_boot=300, rates=rates)
    by = {(r["measure"], r["trait"]): r for r in rows}
    # The mock raises WORK with C and REST with N (logits 1.5 C, 1.5 N): found with CIs
    # above 0. TALK with E too, but talk is offered only when someone is present
    # (a few times per agent in 30 ticks): positive, CI wide.
    assert by[("p_work", "C")]["rho"] > 0.5 and by[("p_work", "C")]["ci_low"] > 0
    assert by[("p_rest", "N")]["rho"] > 0.5 and by[("p_rest", "N")]["ci_low"] > 0
    assert by[("p_talk", "E")]["rho"] > 0.2
    assert by[("p_work", "E")]["ci_low"] < 0 < by[("p_work", "E")]["ci_high"]  # no effect
    assert by[("people_addressed", "E")]["agents"] == 16
    metrics = fingerprint_metrics(rows)
    assert metrics["fingerprint.p_talk.E"] == by[("p_talk", "E")]["rho"]
    assert all(isinstance(v, float) for v in metrics.values())


def test_block_bootstrap_equals_one_spearman_per_resample(monkeypatch):
    """The fingerprint's CIs: the same resamples and values as `bootstrap_ci` over
    `spearman`, with ties, constant resamples and blocks smaller than n_boot."""
    from steertown.analysis import fingerprint as fp
    from steertown.stats import bootstrap_ci, spearman

    monkeypatch.setattr(fp, "BLOCK_VALUES", 50)  # several blocks per call
    g = np.random.default_rng(0)
    cases = [(np.array([0.0, 0, 0, 1]), np.array([0.0, 1, 1, 1]))]  # most resamples constant
    for _ in range(12):
        n = int(g.integers(3, 30))
        cases.append((np.round(g.normal(size=n), 1), np.round(g.normal(size=n) * 2, 0)))  # ties
    for trial, (x, y) in enumerate(cases):
        n = len(x)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        want = bootstrap_ci(n, lambda ix, x=x, y=y: spearman(x[ix], y[ix]), 200, trial)
        got = fp.spearman_bootstrap_ci(x, y, 200, trial)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert all(np.isnan(fp.spearman_bootstrap_ci(np.ones(1), np.ones(1))))
