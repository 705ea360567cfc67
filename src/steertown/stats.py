"""Statistics shared by analysis and verification: correlations, fits, bootstrap CIs.

One module for both (issue 22): `analysis/` and `verification/` import it, it imports
neither. scipy.stats does the ranking and correlations. The bootstrap stays hand-written
(one line why): every CI here resamples *clusters* (agents, items) and refits an arbitrary
statistic over the resampled indices, which scipy.stats.bootstrap (resampling
observations of equal-length samples) does not express without wrapping the same loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _sp


def ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties averaged (as Spearman needs)."""
    return _sp.rankdata(np.asarray(x, dtype=float), method="average")


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; 0 when either side is constant (no evidence either way: scipy says nan)."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(_sp.pearsonr(a, b).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (ties averaged); 0 when either side is constant."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(_sp.spearmanr(a, b).statistic)


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


def cluster_bootstrap_ci(groups: Sequence, stat: Callable[[np.ndarray], float],
                         n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of `stat(row indices)` resampling whole clusters (e.g. agents).

    `groups[i]` is row i's cluster; each resample draws as many clusters as there are,
    with replacement, and passes the rows of the drawn clusters (repeated as drawn).
    Rows of one cluster share their noise (one agent's decisions), so resampling rows
    would understate the CI.
    """
    labels = list(dict.fromkeys(groups))
    members = {g: [] for g in labels}
    for i, g in enumerate(groups):
        members[g].append(i)
    rows = [np.asarray(members[g], dtype=np.intp) for g in labels]
    return bootstrap_ci(len(rows), lambda ix: stat(np.concatenate([rows[k] for k in ix])),
                        n_boot, seed, level)


def cluster_bootstrap_values(groups: Sequence, stat: Callable[[np.ndarray], tuple],
                             n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """[n_boot, k] values of a k-valued `stat(row indices)` over cluster resamples (as
    `cluster_bootstrap_ci`), for statistics that share one resample."""
    labels = list(dict.fromkeys(groups))
    members: dict = {g: [] for g in labels}
    for i, g in enumerate(groups):
        members[g].append(i)
    rows = [np.asarray(members[g], dtype=np.intp) for g in labels]
    rng = np.random.default_rng(seed)
    return np.array([stat(np.concatenate([rows[k] for k in rng.integers(0, len(rows),
                                                                          len(rows))]))
                     for _ in range(n_boot)], dtype=float)


def ols(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of y on the columns of x (no intercept)."""
    return np.linalg.lstsq(np.asarray(x, float), np.asarray(y, float), rcond=None)[0]


def standardized_ols(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """OLS coefficients (no intercept) in units of rms(y) per rms(column): comparable
    across regressors of very different sizes (a trait's axis vs a random direction's)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ry = float(np.sqrt((y * y).mean())) if y.size else 0.0
    if ry == 0:
        return np.zeros(x.shape[1])
    rx = np.sqrt((x * x).mean(0))
    return ols(y, x) * rx / ry


def total_variation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total-variation distance between distributions along the last axis: the share of
    probability mass that moves (for a decision: the chance the choice differs)."""
    return 0.5 * np.abs(np.asarray(p, float) - np.asarray(q, float)).sum(-1)
