"""Sabotage suite on the real model: the verdict's decision checks pass a correctly steered
town and fail each way of not steering it (issue 19).

One session fixture simulates a town (the fast arm's coefficients, seed 3, every agent
deciding each tick: 32 agents x 2 ticks, or 8 x 1 where a fact of every decision, not
statistical power, makes the run fail; see SIZES) in each of seven ways, on the shared
float32 SmolLM2:
correctly steered; `steering.strength=0.01`; `steering.mode=placebo`, `prompt`, `off`;
alphas logged but generation unsteered; trait labels shuffled cyclically (E<-A<-C<-O<-N<-E
vectors, logged alphas keep their labels). Each is verified at the default decision budget
(two decisions per agent, one random direction); the correctly steered one gets the whole
`verify`, whose verdict must read PASS. At one decision per agent (one tick) the
correctly steered town failed O's check (E's and O's axes overlap; measured, 30 decisions). The runs that fail at the replay or for want of any
residual-stream steering stop after the own/none re-scoring, so they cost little.
"""

from __future__ import annotations

import pytest

from steertown.config import VerificationConfig
from steertown.storage.run_dir import RunDir
from steertown.verification.check import Check
from steertown.verification.decisions import CYCLIC_SHUFFLE, decision_checks
from steertown.verification.model_checks import knob
from steertown.verification.verdict import verify_run

pytestmark = [pytest.mark.model, pytest.mark.slow]
TRAITS = ["E", "A", "C", "O", "N"]


# The runs that must pass (steered) or fail for want of statistical support (placebo,
# shuffled: each would pass were it the steered run) need the full town: 64 decisions.
# The others fail on facts any decision shows (no residual steering, a replay that is not
# the logged value, a change far below the floor: at full strength the mean TV is > 0.05,
# so even 8 decisions read "changed"), so a town of 8 agents x 1 tick tests them as well
# and costs an eighth of the simulation.
FULL = {"population": 32, "steps": 2}
SIZES = {kind: {"population": 8, "steps": 1} for kind in ("weak", "prompt", "off",
                                                          "steering_off")}


DEFAULT_BUDGET = VerificationConfig()  # 64 decisions, one random direction, 4 control items


@pytest.fixture(scope="session")
def verdicts(tmp_path_factory):
    """verdicts[kind] -> {check name: Check}; each run is simulated and verified the first
    time a test asks for it (so `-k` runs only the runs its tests need). The correctly
    steered run gets the whole `verify` (every check, the verdict in `verdicts.verdict`);
    the others only the decision checks that must catch them."""
    from tests.model_fixtures import shared_backend
    from tests.real_runs import make_run

    tmp = tmp_path_factory.mktemp("sabotage")
    cache: dict[str, dict] = {}
    verdict: dict[str, str] = {}

    class Verdicts:
        def __getitem__(self, kind: str) -> dict:
            if kind not in cache:
                run = make_run(tmp, kind, **SIZES.get(kind, FULL), spread=0.5)
                if kind == "steered":
                    report = verify_run(run, backend=shared_backend(), vcfg=DEFAULT_BUDGET)
                    verdict[kind] = report["verdict"]
                    cache[kind] = {c["name"]: Check(**c) for c in report["checks"]}
                    return cache[kind]
                # The shuffled control is replayed as it was delivered (its replay
                # passes), so it is the trait check, not the replay, that must catch it.
                checks, _ = decision_checks(
                    RunDir(run), shared_backend(), TRAITS, DEFAULT_BUDGET, knob,
                    relabel=CYCLIC_SHUFFLE if kind == "shuffled" else None)
                cache[kind] = {c.name: c for c in checks}
            return cache[kind]

        def verdict(self, kind: str) -> str:
            self[kind]
            return verdict[kind]

    return Verdicts()


def required_failures(checks: dict) -> list[str]:
    return [n for n, c in checks.items() if c.required and c.passed is False]


def test_correctly_steered_town_passes_every_decision_check(verdicts):
    checks = verdicts["steered"]
    assert required_failures(checks) == [], {n: c.figure for n, c in checks.items()}
    assert checks["decisions.replay"].data["max_abs_diff"] < 1e-3
    assert checks["decisions.changed"].data["tv_ci_low"] > 0.05


def test_correctly_steered_town_reads_pass_at_the_default_budget(verdicts):
    """Every required check of the whole verify, the dose-response gates included."""
    assert verdicts.verdict("steered") == "PASS", required_failures(verdicts["steered"])


def test_tiny_strength_fails_for_too_small_a_change(verdicts):
    c = verdicts["weak"]["decisions.changed"]
    assert verdicts["weak"]["decisions.replay"].passed  # it did steer, exactly as logged
    assert c.passed is False and "too little" in c.figure, c.figure


@pytest.mark.parametrize("kind", ["prompt", "off"])
def test_modes_that_do_not_steer_the_residual_stream_fail_changed(verdicts, kind):
    c = verdicts[kind]["decisions.changed"]
    assert c.passed is False and "reached the residual stream" in c.figure, c.figure


def test_placebo_fails_the_steering_checks(verdicts):
    checks = verdicts["placebo"]
    assert checks["decisions.replay"].passed  # replayed on its own placebo basis
    failed = required_failures(checks)
    assert failed and all(n.startswith("decisions.") for n in failed), failed


def test_alphas_logged_but_unsteered_generation_fails_the_replay(verdicts):
    checks = verdicts["steering_off"]
    assert checks["decisions.replay"].passed is False
    assert required_failures(checks) == ["decisions.replay", "decisions.changed",
                                         *(f"decisions.{t}" for t in TRAITS)]


def test_shuffled_trait_labels_fail_the_trait_check(verdicts):
    checks = verdicts["shuffled"]
    assert checks["decisions.replay"].passed  # replayed as delivered
    failed = [t for t in TRAITS if checks[f"decisions.{t}"].passed is False]
    assert len(failed) >= 4, {t: checks[f"decisions.{t}"].figure for t in TRAITS}
