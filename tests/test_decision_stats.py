"""The verdict's decision statistics and the replay rule on synthetic decisions (no model).

A synthetic decision has 3-7 options whose probabilities are a softmax of logits; steering
moves the logits along per-decision directions (one per trait, and random directions of
the same kind), so conditions are computed exactly as the verifier computes them on the
model (own, none, each trait's axis at the midpoint, random directions at the own norm,
random axes). Sizes are those measured on SmolLM2's fast arm (docs/verification.md):
32 agents, 1-2 decisions each, coefficients of sd ~0.45 around the arm's means, mean
TV(own, none) ~0.2, random directions of the same norm ~3/4 of that.
"""

from __future__ import annotations

import numpy as np
import pytest

from steertown.verification.decision_stats import changed_check, trait_checks
from steertown.verification.decisions import Decision, DecisionScores, replay_check

TRAITS = ["E", "A", "C", "O", "N"]
MEANS = {"E": 0.3, "A": 0.2, "C": 0.2, "O": 0.0, "N": -0.1}  # the fast arm's
TRAIT_SIZE = 1.0  # logit change per unit coefficient along a trait's direction (sd)
RANDOM_SIZE = 0.75  # a random direction of the same residual norm moves logits less
OVERLAP = 0.6  # correlation share of the trait axes' common part


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def synthetic(kind: str = "steered", agents: int = 32, seed: int = 0, strength: float = 1.0,
              drift: float = 0.0, n_random: int = 1, per_agent: int | None = None
              ) -> DecisionScores:
    """`kind`: steered (the agent's alphas on the trait directions), placebo (on other
    directions of the same size), shuffled (each alpha on the next trait's direction,
    E<-A<-C<-O<-N<-E), off (logged alphas, generated unsteered), prompt (nothing reaches
    the residual stream: own = none), negated (each trait steered the wrong way).
    `per_agent`: decisions per agent (default 1 or 2 at random)."""
    rng = np.random.default_rng(seed)
    names = ["own", "none", *(f"vec:{t}{s}" for t in TRAITS for s in "+-"),
             *(f"R{r}" for r in range(n_random)),
             *(f"Rax{r}{s}" for r in range(n_random) for s in "+-")]
    decisions, logprobs, scales = [], [], []
    for a in range(agents):
        alpha = {t: float(np.clip(rng.normal(MEANS[t], 0.45), -1, 1)) * strength
                 for t in TRAITS}
        for k in range(per_agent or int(rng.integers(1, 3))):
            n = int(rng.integers(3, 8))
            base = rng.normal(0, 1.5, n)
            # Trait axes overlap (on SmolLM2 E, A and O all raise talk): a shared part.
            common = rng.normal(0, TRAIT_SIZE, n)
            d = {t: OVERLAP * common + np.sqrt(1 - OVERLAP ** 2) * rng.normal(0, TRAIT_SIZE, n)
                 for t in TRAITS}
            # placebo directions are random directions of the trait norm: random-sized effects
            placebo = {t: rng.normal(0, RANDOM_SIZE, n) for t in TRAITS}
            shuffled = dict(zip(TRAITS, [d[t] for t in TRAITS[1:] + TRAITS[:1]], strict=True))
            basis = {"steered": d, "off": d, "placebo": placebo, "shuffled": shuffled,
                     "negated": {t: -d[t] for t in TRAITS},
                     "prompt": {t: 0 * d[t] for t in TRAITS}}[kind]
            own = sum(alpha[t] * basis[t] for t in TRAITS)
            norm = float(np.sqrt(sum(v * v for v in alpha.values())))
            rows = {"own": base + own, "none": base}
            for t in TRAITS:
                rows[f"vec:{t}+"], rows[f"vec:{t}-"] = base + own / 2 + d[t], base + own / 2 - d[t]
            for r in range(n_random):
                rows[f"R{r}"] = base + norm * rng.normal(0, RANDOM_SIZE, n)
                v = rng.normal(0, RANDOM_SIZE, n)
                rows[f"Rax{r}+"], rows[f"Rax{r}-"] = base + own / 2 + v, base + own / 2 - v
            lp = np.log(np.stack([_softmax(rows[m]) for m in names]))
            generated = base if kind == "off" else base + own
            chosen = int(rng.choice(n, p=_softmax(generated)))
            logged = float(np.log(_softmax(generated))[chosen]) + drift * rng.normal()
            opts = tuple(f"{c} x{j}" for j, c in enumerate(
                rng.choice(["Talk", "Work", "Move", "Rest", "Help"], n)))
            decisions.append(Decision(f"a{a:02d}", k, "s", "u", opts, opts[chosen], logged,
                                      alpha, "prompt" if kind == "prompt" else "vectors"))
            logprobs.append(lp)
            scales.append(0.0 if kind == "prompt" else norm)
    return DecisionScores(decisions, names, logprobs, 1.0, scales, 1e-3, drift == 0.0)


def checks_of(scores: DecisionScores, min_changed: float = 0.05, n_boot: int = 200) -> dict:
    data = scores.data(TRAITS)
    out = [changed_check(data, min_changed, n_boot=n_boot)]
    out += trait_checks(data, TRAITS, n_boot=n_boot)
    return {c.name: c for c in out}


def test_a_correctly_steered_run_passes_every_check():
    scores = synthetic("steered")
    assert replay_check(scores).passed
    checks = checks_of(scores)
    for c in checks.values():
        assert c.passed, c.figure
    assert 0.8 < checks["decisions.E"].data["raw"] < 1.2  # the linear effect, recovered


def test_steering_that_never_reaches_the_residual_stream_fails_changed():
    c = checks_of(synthetic("prompt"))["decisions.changed"]
    assert c.passed is False and c.data["tv"] == 0, c.figure


def test_a_placebo_fails_the_trait_checks():
    checks = checks_of(synthetic("placebo"))
    failed = [t for t in TRAITS if not checks[f"decisions.{t}"].passed]
    assert len(failed) >= 4, {t: checks[f"decisions.{t}"].figure for t in TRAITS}


def test_tiny_strength_fails_changed_only_by_the_minimum_effect():
    c = checks_of(synthetic("steered", strength=0.01))["decisions.changed"]
    assert c.passed is False and c.data["tv_ci_high"] < 0.05
    assert c.data["tv_minus_random"] > 0  # still the right kind of change, too small


def test_shuffled_labels_fail_the_trait_checks():
    checks = checks_of(synthetic("shuffled"))
    failed = [t for t in TRAITS if not checks[f"decisions.{t}"].passed]
    assert len(failed) >= 4, {t: checks[f"decisions.{t}"].figure for t in TRAITS}


def test_steering_each_trait_the_wrong_way_fails_every_trait_check():
    checks = checks_of(synthetic("negated"))
    for t in TRAITS:  # its own axis explains the shift best, but with the wrong sign
        c = checks[f"decisions.{t}"]
        assert c.passed is False and c.data["ci_high"] < 0 < c.data["margin"], c.figure


def test_steering_off_fails_the_replay():
    r = replay_check(synthetic("off"))
    assert r.passed is False and r.data["closer_to_unsteered"] > 0.8 * r.data["steered_decisions"]


def test_inexact_dtypes_tolerate_drift_but_not_unsteered_generation():
    drifted = synthetic("steered", drift=0.01)  # bfloat16-like noise on the logged values
    drifted.tolerance = 0.05
    assert replay_check(drifted).passed
    off = synthetic("off", drift=0.01)
    off.tolerance = 0.05
    assert replay_check(off).passed is False


@pytest.mark.parametrize("per_agent", [2, None])
def test_power_and_false_positive_rate_over_seeds(per_agent):
    """A real effect of the measured size at 32 agents x 2 decisions (the default budget,
    `decision_samples` 64) and x 1-2 passes in >= 95% of seeds (`changed` and all five
    traits); each null fails in >= 95% of seeds: a placebo (some required check),
    shuffled labels (each trait's check)."""
    seeds = range(40)
    passes = sum(all(c.passed for c in checks_of(
        synthetic("steered", seed=s, per_agent=per_agent)).values()) for s in seeds)
    assert passes >= 38, passes
    placebo = sum(all(c.passed for c in checks_of(
        synthetic("placebo", seed=s, per_agent=per_agent)).values()) for s in seeds)
    assert placebo <= 2, placebo
    shuffled = [checks_of(synthetic("shuffled", seed=s, per_agent=per_agent)) for s in seeds]
    for t in TRAITS:
        false_pass = sum(bool(c[f"decisions.{t}"].passed) for c in shuffled)
        assert false_pass <= 2, (t, false_pass)
