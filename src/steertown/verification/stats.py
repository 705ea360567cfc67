"""Small statistics for verification (numpy only): Spearman, line fits, bootstrap CIs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


def ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties averaged (as Spearman needs); vectorised, O(n log n)."""
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="mergesort")
    inv = np.empty(len(a), dtype=np.intp)
    inv[order] = np.arange(len(a))
    s = a[order]
    new_value = np.r_[True, s[1:] != s[:-1]] if len(s) else np.array([], bool)
    group = np.cumsum(new_value)[inv]  # 1-based group of each element
    bounds = np.r_[np.nonzero(new_value)[0], len(a)]  # first index of each group, then n
    return 0.5 * (bounds[group] + bounds[group - 1] + 1)


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; 0 when either side is constant (no evidence either way)."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties averaged)."""
    return pearson(ranks(x), ranks(y))


def line_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares (slope, intercept, R^2) of y on x."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    xm, ym = a.mean(), b.mean()
    sxx = ((a - xm) ** 2).sum()
    slope = float(((a - xm) * (b - ym)).sum() / sxx) if sxx > 0 else 0.0
    resid = b - (ym + slope * (a - xm))
    sst = ((b - ym) ** 2).sum()
    r2 = float(1 - (resid ** 2).sum() / sst) if sst > 0 else 0.0
    return slope, float(ym - slope * xm), r2


def bootstrap_ci(n: int, stat: Callable[[np.ndarray], float], n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of `stat(indices)` over `n_boot` resamples of range(n) with replacement."""
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    vals = vals[np.isfinite(vals)]
    lo = (1 - level) / 2
    return float(np.quantile(vals, lo)), float(np.quantile(vals, 1 - lo))


@dataclass
class DoseFit:
    """Dose-response of one readout along one direction, over items x coefficients."""

    slope: float  # score units per unit coefficient (OLS of the item-mean curve)
    ci_low: float  # 95% bootstrap CI of the slope, resampling items
    ci_high: float
    r2: float  # linearity of the item-mean curve
    rho: float  # Spearman of coefficient vs item-mean score (monotonicity)
    n_items: int
    curve: dict[str, float]  # coefficient (as text) -> mean score over items

    def to_dict(self) -> dict:
        return asdict(self)


def dose_fit(scores: np.ndarray, coefs: Sequence[float], n_boot: int = 1000,
             seed: int = 0) -> DoseFit:
    """Fit `scores[item, coef]`: slope of the mean curve, item-bootstrap CI, R^2, Spearman.

    With every item scored at every coefficient the pooled OLS slope equals the slope of
    the item-mean curve; resampling items (not points) keeps each item's curve together,
    so the CI reflects how much the effect varies across items.
    """
    s = np.asarray(scores, float)
    c = np.asarray(coefs, float)
    mean = s.mean(0)
    slope, _, r2 = line_fit(c, mean)
    lo, hi = bootstrap_ci(s.shape[0], lambda ix: line_fit(c, s[ix].mean(0))[0], n_boot, seed)
    return DoseFit(slope, lo, hi, r2, spearman(c, mean), s.shape[0],
                   {f"{k:g}": float(v) for k, v in zip(c, mean, strict=True)})


def rank_percentile(value: float, others: Sequence[float]) -> float:
    """Share of `others` strictly below `value` (0..1)."""
    o = np.asarray(others, float)
    return float((o < value).mean()) if len(o) else float("nan")
