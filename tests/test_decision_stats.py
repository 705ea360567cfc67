"""The in-situ decision statistic and the replay rule on synthetic scores (no model).

Option probabilities are built from logits that move linearly with each trait's
direction, so an agent's own steering shifts its decisions by a known amount: the
statistic must find the coefficients; shifts unrelated to the trait directions (a
placebo) or absent (steering off) must fail.
"""

from __future__ import annotations

import numpy as np

from steertown.verification.decisions import (
    Decision,
    DecisionScores,
    replay_check,
    trait_checks,
)

TRAITS = ["E", "A", "C"]


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def synthetic(kind: str = "steered", agents: int = 16, per_agent: int = 3, seed: int = 0,
              drift: float = 0.0):
    rng = np.random.default_rng(seed)
    names = ["own", "none"] + [f"vec:{t}{s}" for t in TRAITS for s in "+-"] \
        + [f"R{r}{s}" for r in range(4) for s in "+-"]
    decisions, logprobs = [], []
    coefs = {a: rng.uniform(-1, 1, len(TRAITS)) for a in range(agents)}
    for a in range(agents):
        for k in range(per_agent):
            n = 6
            base = rng.normal(0, 1, n)
            dirs = {**{f"vec:{t}": rng.normal(0, 1, n) for t in TRAITS},
                    **{f"R{r}": rng.normal(0, 1, n) for r in range(4)}}
            if kind == "unspecific":  # a random direction moves decisions exactly like E
                dirs["R0"] = dirs["vec:E"]
            placebo = sum(c * rng.normal(0, 1, n) for c in coefs[a])
            intended = sum(c * dirs[f"vec:{t}"] for c, t in zip(coefs[a], TRAITS, strict=True))
            applied = {"placebo": placebo, "off": 0 * base}.get(kind, intended)
            # The own-steering replay: what the run applied (the hooks), or, for a run
            # that generated unsteered, the steering it logged.
            rows = {"none": base, "own": base + (intended if kind == "off" else applied)}
            for d, v in dirs.items():
                rows[f"{d}+"], rows[f"{d}-"] = base + v, base - v
            lp = np.log(np.stack([_softmax(rows[nm]) for nm in names]))
            generated = base + applied  # what the run sampled from
            chosen = int(np.argmax(generated))
            logged = float(np.log(_softmax(generated))[chosen]) + drift * rng.normal()
            opts = tuple(f"Opt{j} x" for j in range(n))
            decisions.append(Decision(f"a{a:02d}", k, "s", "u", opts, opts[chosen], logged,
                                      dict(zip(TRAITS, coefs[a].tolist(), strict=True))))
            logprobs.append(lp)
    return DecisionScores(decisions, names, logprobs, 1.0, 1e-3, drift == 0.0)


def test_the_statistic_finds_each_agents_coefficients():
    scores = synthetic("steered")
    assert replay_check(scores).passed
    checks = {c.name: c for c in trait_checks(scores, TRAITS, 4, n_boot=300)}
    for t in TRAITS:
        c = checks[f"decisions.{t}"]
        assert c.passed and c.data["rho"] > 0.8 and c.data["rho"] > c.data["random_max"], c.figure


def test_placebo_shifts_fail():
    scores = synthetic("placebo")
    assert replay_check(scores).passed  # generated with what it logged (placebo hooks)
    checks = trait_checks(scores, TRAITS, 4, n_boot=300)
    assert not all(c.passed for c in checks)
    assert np.mean([c.data["rho"] for c in checks]) < 0.4


def test_steering_off_fails_replay_and_every_trait():
    scores = synthetic("off")
    r = replay_check(scores)
    assert r.passed is False and r.data["closer_to_unsteered"] == r.data["steered_decisions"]
    assert not any(c.passed for c in trait_checks(scores, TRAITS, 4, n_boot=300))


def test_inexact_dtypes_tolerate_drift_but_not_unsteered_generation():
    drifted = synthetic("steered", drift=0.01)  # bfloat16-like noise on the logged values
    drifted.tolerance = 0.05
    assert replay_check(drifted).passed
    off = synthetic("off", drift=0.01)
    off.tolerance = 0.05
    assert replay_check(off).passed is False


def test_a_trait_no_better_than_a_random_direction_fails():
    checks = {c.name: c for c in trait_checks(synthetic("unspecific"), TRAITS, 4, n_boot=300)}
    e = checks["decisions.E"]
    assert e.data["ci_low"] > 0  # E's shift does rise with the coefficient...
    assert e.passed is False and e.data["random_max"] >= e.data["rho"]  # ...but not specifically
    assert checks["decisions.A"].passed
