"""The statistics of a study's contrasts: paired t summaries and Holm's correction.

A contrast per seed is one number (a difference of two runs' slopes), so over seeds it
is a one-sample problem: mean, 95% t-interval (n-1 degrees of freedom) and the two-sided
one-sample t-test of mean = 0 (scipy). Holm's step-down adjustment keeps the family-wise
error rate of a family of tests at alpha. Power of that test at a standardized effect
d = mean / sd comes from the noncentral t distribution (`t_power`); `detectable_d` inverts
it: the smallest d found with the given power at this many seeds.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from scipy import optimize, stats

from steertown.analysis.compare import mean_ci


def t_summary(values: list[float | None]) -> dict[str, Any]:
    """{"mean", "ci_low", "ci_high", "p", "sd", "d", "n"} of the defined values: sd with
    the n-1 denominator, d = mean / sd (standardized effect). CI, p, sd and d are None for
    fewer than two values; p and d also when the values do not vary."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    m, lo, hi = mean_ci(vals)
    p = None
    if len(vals) >= 2 and max(vals) > min(vals):
        p = float(stats.ttest_1samp(vals, 0.0).pvalue)
    sd = statistics.stdev(vals) if len(vals) >= 2 else None
    d = m / sd if sd else None
    return {"mean": m, "ci_low": lo, "ci_high": hi, "p": p, "sd": sd, "d": d, "n": len(vals)}


def t_power(d: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample t-test at level alpha with n values when the true
    mean is d standard deviations from 0."""
    df, nc = n - 1, d * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)
    upper = stats.nct.sf(crit, df, nc)
    lower = stats.nct.cdf(-crit, df, nc)
    return float(upper + (lower if math.isfinite(lower) else 0.0))  # scipy: nan far in the tail


def detectable_d(n: int, alpha: float, power: float = 0.8) -> float | None:
    """The standardized effect the test detects with `power` (None for n < 2)."""
    if n < 2:
        return None
    high = 1.0  # few seeds at a strict level need a large d (2 seeds at 0.01: ~56)
    while t_power(high, n, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda d: t_power(d, n, alpha) - power, 0.0, high))


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input's order (None stays None and is not counted).

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of
    min(1, (m - j + 1) * p_(j)). Rejecting where adjusted p < alpha is Holm's procedure.
    """
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        out[i] = running
    return out
