"""Power at the study's size: the t-test's detectable effect (the preregistration's 1.69
and 2.63 standard deviations at 5 seeds) and the results' power table built from it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from steertown.analysis.study_results import PRIMARY, effect_rows
from steertown.analysis.study_results_report import results_markdown
from steertown.analysis.study_stats import detectable_d, t_power, t_summary


def test_detectable_effect_at_five_seeds_is_the_preregistered_one():
    # studies/town-v1/preregistration.md: "about 1.69" at alpha 0.05, "about 2.63" at 0.01
    assert detectable_d(5, 0.05) == pytest.approx(1.682, abs=1e-3)
    assert detectable_d(5, 0.01) == pytest.approx(2.629, abs=1e-3)
    assert t_power(0.0, 5, 0.05) == pytest.approx(0.05)  # no effect: the test's level
    assert detectable_d(20, 0.05) < detectable_d(5, 0.05)  # more seeds, smaller effects
    assert detectable_d(1, 0.05) is None
    two = detectable_d(2, 0.01)  # a two-seed study at Holm's first step: a huge d
    assert two > 50 and t_power(two, 2, 0.01) == pytest.approx(0.8)


def test_power_matches_a_simulated_t_test():
    """Draw 5 normal per-seed contrasts at the detectable d, test each set with scipy's
    one-sample t-test: about 80% reject (a one-sided or wrong-df power would not)."""
    rng = np.random.default_rng(0)
    for alpha in (0.05, 0.01):
        d = detectable_d(5, alpha)
        draws = rng.normal(d, 1.0, size=(40_000, 5))
        rejected = (stats.ttest_1samp(draws, 0.0, axis=1).pvalue < alpha).mean()
        assert rejected == pytest.approx(0.80, abs=0.01), (alpha, rejected)


def test_t_summary_reports_sd_and_standardized_effect():
    s = t_summary([1.0, 2.0, 3.0])
    assert (s["sd"], s["d"]) == pytest.approx((1.0, 2.0))
    assert t_summary([0.5, 0.5])["d"] is None  # no spread: d undefined
    assert t_summary([0.5])["sd"] is None


def test_results_give_the_detectable_effect_in_each_outcomes_units():
    slopes = []
    for seed, noise in ((1, 0.0), (2, 0.1), (3, -0.05), (4, 0.05), (5, -0.1)):
        for k, (trait, measure) in enumerate(PRIMARY.items()):
            for mode, base in (("vectors", 0.2 * k), ("placebo", 0.0)):
                slopes.append({"arm": "fast", "seed": seed, "mode": mode, "trait": trait,
                               "measure": measure,
                               "slope": base + (1 + k) * noise * (mode == "vectors")})
    effects = effect_rows(slopes)
    numbers = {"cells": [], "effects": effects, "complete": True, "n_complete": 0,
               "commits": [], "verification": [], "society": [], "society_paired": []}
    md = results_markdown("t", numbers, "cmd", None)
    assert "80% power when the mean contrast is 2.63 standard deviations" in md
    a = next(r for r in effects if r["trait"] == "A" and r["family"] == "primary")
    sd = np.std([(2 * n) for n in (0.0, 0.1, -0.05, 0.05, -0.1)], ddof=1)  # A: k = 1
    assert a["sd"] == pytest.approx(sd)
    row = (f"| vectors - placebo | A | p_help | {a['mean']:+.3f} | {sd:.3f} | "
           f"{a['mean'] / sd:+.2f} | {2.629 * sd:.3f} | {1.682 * sd:.3f} |")
    assert row in md, md
