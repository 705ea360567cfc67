"""Means with confidence intervals over replicates (seeds), for comparisons and studies."""

from __future__ import annotations

import math
import statistics

from scipy import stats


def mean_ci(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean and 95% confidence interval (t-distribution); CI is None for n < 2."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None, None
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return m, None, None
    half = stats.t.ppf(0.975, len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return m, m - half, m + half
