"""The statistics of a study's contrasts: paired t summaries and Holm's correction.

A contrast per seed is one number (a difference of two runs' slopes), so over seeds it
is a one-sample problem: mean, 95% t-interval (n-1 degrees of freedom) and the two-sided
one-sample t-test of mean = 0 (scipy). Holm's step-down adjustment keeps the family-wise
error rate of a family of tests at alpha.
"""

from __future__ import annotations

import math
from typing import Any

from scipy import stats

from steertown.analysis.compare import mean_ci


def t_summary(values: list[float | None]) -> dict[str, Any]:
    """{"mean", "ci_low", "ci_high", "p", "n"} of the defined values; CI and p are None
    for fewer than two values, p is None when they do not vary (t undefined)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    m, lo, hi = mean_ci(vals)
    p = None
    if len(vals) >= 2 and max(vals) > min(vals):
        p = float(stats.ttest_1samp(vals, 0.0).pvalue)
    return {"mean": m, "ci_low": lo, "ci_high": hi, "p": p, "n": len(vals)}


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
