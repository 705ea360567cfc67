"""Decisions in situ on the real model: replay, and sabotaged runs that must fail.

Three small runs of the same town (8 agents x 4 ticks, seed 3, every agent acting every
tick): correctly steered; steering off while the alphas are logged; `steering.mode=
placebo` (random directions of the trait vectors' norms in place of the vectors). Each is verified with the same
small budget (2 decisions per agent, 2 random directions). With 8 agents a Spearman CI
rarely clears 0, so the steered run is not required to pass (nor to beat the placebo: see
the last test); each sabotaged run must fail the required decision checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from steertown.config import VerificationConfig
from steertown.storage.run_dir import RunDir
from steertown.verification.decisions import (
    decision_checks,
    option_paths,
    rescore,
    sample_decisions,
)
from steertown.verification.model_checks import knob

pytestmark = pytest.mark.model
TRAITS = ["E", "A", "C", "O", "N"]


def vcfg() -> VerificationConfig:
    return VerificationConfig(random_directions=2, decision_samples=16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{kind: (run dir, checks by name)} for the three runs."""
    from tests.model_fixtures import shared_backend
    from tests.real_runs import make_run

    tmp = tmp_path_factory.mktemp("decisions")
    backend = shared_backend()
    out = {}
    for kind in ("steered", "steering_off", "placebo"):
        run = make_run(tmp, kind)
        checks, _ = decision_checks(RunDir(run), backend, TRAITS, vcfg(), knob)
        out[kind] = (run, {c.name: c for c in checks})
    return out


def mean_rho(checks: dict) -> float:
    return float(np.mean([checks[f"decisions.{t}"].data.get("rho", 0.0) for t in TRAITS]))


def test_replay_reproduces_the_logged_option_logprob(runs):
    run, checks = runs["steered"]
    replay = checks["decisions.replay"]
    assert replay.passed, replay.figure
    # up to 16 sampled (an agent with a single decision gives one, not two)
    assert 12 <= replay.data["decisions"] <= 16 and replay.data["max_abs_diff"] < 1e-3
    assert replay.data["steered_decisions"] > 0  # steering mattered somewhere: not vacuous


def test_every_option_is_reachable_and_probabilities_sum_to_one(runs):
    from tests.model_fixtures import shared_backend

    backend = shared_backend()
    run, _ = runs["steered"]
    decisions = sample_decisions(RunDir(run), 4)
    for d in decisions:
        assert all(p is not None for p in option_paths(backend, d.options))
    scores = rescore(backend, decisions, ["E"], 1, 1.0)
    for lp in scores.logprobs:  # the trie's renormalisation makes a distribution per row
        assert np.allclose(np.exp(lp).sum(1), 1.0, atol=1e-4)


def test_steering_off_run_fails_the_decision_check(runs):
    _, checks = runs["steering_off"]
    replay = checks["decisions.replay"]
    assert replay.passed is False  # logged values are the unsteered replays
    assert replay.data["closer_to_unsteered"] == replay.data["steered_decisions"] > 0
    assert not all(checks[f"decisions.{t}"].passed for t in TRAITS)
    assert mean_rho(checks) == 0.0  # no decision carried the steering: no shift at all


def test_placebo_run_fails_the_decision_check(runs):
    _, checks = runs["placebo"]
    # Replayed on the run's placebo basis (from its manifest): what it generated with.
    assert checks["decisions.replay"].passed, checks["decisions.replay"].figure
    failed = [t for t in TRAITS if not checks[f"decisions.{t}"].passed]
    assert failed, "a placebo run must not pass the trait decision checks"


def test_steered_run_carries_a_signal_the_unsteered_run_lacks(runs):
    # With 8 agents the steered run's statistic is noise-dominated: on the final prompts it
    # gave mean rho 0.21 against the placebo's 0.22 (docs/verification.md), so it is not
    # required to beat the placebo here; that the statistic can pass a real signal and
    # fails placebo-like ones is tested on synthetic scores (test_decision_stats.py).
    steered = mean_rho(runs["steered"][1])
    assert steered > mean_rho(runs["steering_off"][1])  # = 0: no decision carried steering
    # Each trait reports how its axis moves the option classes, with CIs.
    e = runs["steered"][1]["decisions.E"].data
    assert {"shift_work", "shift_rest", "shift_move"} <= set(e)
    assert e["shift_work_ci_low"] <= e["shift_work"] <= e["shift_work_ci_high"]
