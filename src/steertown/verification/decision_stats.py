"""The verdict's statistics on re-scored decisions: how much steering changed them, and
whether each trait's own vector is behind the change. Numpy only (no model), so the
statistics' power is tested on synthetic decisions (tests/test_decision_stats.py).

Per sampled decision d (options j): p_own (the agent's own steering as the run delivered
it), p_none, and for each steered trait T its *axis* a_T = (p(m + c v_T) - p(m - c v_T)) / 2c,
the change of the option distribution per unit coefficient, taken at m = half the agent's
own steering (the midpoint rule: the own shift p_own - p_none = sum_T alpha_T a_T up to
third-order terms, so the quadratic part that any push of that size has whatever its
direction is not left over). Random directions: p_r, the distribution under a random
direction of the own steering's norm; a_r, a random direction's axis taken like a_T.

- Changed: TV(p_own, p_none) = 0.5 sum_j |p_own - p_none|, the share of decisions the
  steering changed; its mean over decisions with an agent-bootstrap CI, beside the same
  for the random directions at the same norms. Required: CI above `min_changed`, and the
  mean above the random directions' mean.
- Right trait: pooled over every (decision, option), y = p_own - p_none is regressed on
  x_T = alpha_T(d) * a_T(d) for all steered traits jointly (no intercept). With correct
  steering y is (to first order) sum_T alpha_T a_T, so each coefficient is near 1 and the
  fit is tight however few decisions each agent has: power comes from pooling (measured
  R^2 0.98 on a 32-agent fast-arm run, raw coefficients 1.02-1.20). Required per trait:
  the coefficient's CI (agent bootstrap) above 0, and the fit explaining more with T's
  own axis than with any substitute in T's column (each random axis; each other steered
  trait's axis): the CI of R^2(own) - max R^2(substitute) above 0. Fit quality, not the
  substitute's coefficient, is compared: a fixed random direction that happens to move
  decisions like T does can get as large a standardized coefficient (measured +0.43 vs
  O's +0.48), but it cannot explain the shifts as well as the axis that made them. A run
  that steered T with another trait's vector is explained better by that trait's axis.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from steertown.stats import (
    cluster_bootstrap_ci,
    cluster_bootstrap_values,
    ols,
    standardized_ols,
    total_variation,
)
from steertown.verification.check import Check
from steertown.verification.expected import agreement


@dataclasses.dataclass
class DecisionData:
    """Per decision: agent, option classes, alphas, distributions and axes (numpy)."""

    agents: list[str]
    classes: list[list[str]]
    alphas: list[dict[str, float]]
    p_own: list[np.ndarray]
    p_none: list[np.ndarray]
    axes: dict[str, list[np.ndarray]]  # trait -> per decision, per unit coefficient
    p_random: list[list[np.ndarray]]  # per decision, one distribution per random direction
    random_axes: list[list[np.ndarray]]  # per decision, per random direction
    applied: list[bool]  # the logged decision was generated with the own steering

    def own_shift(self, k: int) -> np.ndarray:
        """p_own - p_none where the run applied the steering, 0 where it did not."""
        return self.p_own[k] - self.p_none[k] if self.applied[k] else 0 * self.p_none[k]

    def __len__(self) -> int:
        return len(self.agents)


def _mean_ci(values: np.ndarray, agents: list[str], n_boot: int, seed: int):
    lo, hi = cluster_bootstrap_ci(agents, lambda ix: float(values[ix].mean()), n_boot, seed)
    return float(values.mean()), lo, hi


def class_mass(p: np.ndarray, classes: list[str]) -> dict[str, float]:
    """{option class: summed probability} of one decision's distribution."""
    out: dict[str, float] = {}
    for v, c in zip(p, classes, strict=True):
        out[c] = out.get(c, 0.0) + float(v)
    return out


def changed(data: DecisionData, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean TV(own, none) and TV(random, none) with agent-bootstrap CIs, the paired
    difference, and per option class the mean |P_own(class) - P_none(class)|."""
    own = np.array([total_variation(data.p_own[k], data.p_none[k]) if data.applied[k] else 0.0
                    for k in range(len(data))])
    rand = np.array([np.mean([total_variation(p, data.p_none[k]) for p in data.p_random[k]])
                     if data.p_random[k] else 0.0 for k in range(len(data))])
    out = {"own": _mean_ci(own, data.agents, n_boot, seed),
           "random": _mean_ci(rand, data.agents, n_boot, seed + 1),
           "own_minus_random": _mean_ci(own - rand, data.agents, n_boot, seed + 2),
           "classes": {}}
    per: dict[str, list[tuple[int, float]]] = {}
    for k in range(len(data)):
        a, b = class_mass(data.p_own[k], data.classes[k]), class_mass(data.p_none[k],
                                                                       data.classes[k])
        for c in a:
            per.setdefault(c, []).append((k, abs(a[c] - b[c]) if data.applied[k] else 0.0))
    for c, rows in sorted(per.items()):
        v = np.array([x for _, x in rows])
        out["classes"][c] = _mean_ci(v, [data.agents[k] for k, _ in rows], n_boot, seed + 3)
    return out


def design(data: DecisionData, traits: list[str], swap: tuple[str, str | int] | None = None):
    """Stacked (y, X, agent per row): y = own shift, X[:, T] = alpha_T * a_T. `swap =
    (T, S)` puts alpha_T * a_S in T's column (S a trait, or an int: random direction S)."""
    ys, xs, groups = [], [], []
    for k in range(len(data)):
        y = data.own_shift(k)
        cols = []
        for t in traits:
            src = swap[1] if swap is not None and swap[0] == t else t
            axis = data.random_axes[k][src] if isinstance(src, int) else data.axes[src][k]
            cols.append(data.alphas[k].get(t, 0.0) * axis)
        ok = np.isfinite(y) & np.all(np.isfinite(cols), axis=0)
        ys.append(y[ok])
        xs.append(np.stack(cols, 1)[ok])
        groups += [data.agents[k]] * int(ok.sum())
    return np.concatenate(ys), np.concatenate(xs), groups


def r_squared(y: np.ndarray, x: np.ndarray) -> float:
    """Share of sum(y^2) the no-intercept least-squares fit of y on x explains."""
    yy = float(y @ y)
    if yy == 0:
        return 0.0
    res = y - x @ ols(y, x)
    return 1.0 - float(res @ res) / yy


def trait_fit(data: DecisionData, traits: list[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """Per trait: standardized and raw coefficient (raw ~1 when the own shift is the sum of
    the traits' linear effects) with agent-bootstrap CIs; the fit's R^2, and R^2 with each
    random axis and each other trait's axis in the trait's column; the margin of the
    trait's own axis over the best of those substitutes, with its agent-bootstrap CI."""
    y, x, groups = design(data, traits)
    if len(y) == 0:
        return {t: None for t in traits}
    full, raw, r2 = standardized_ols(y, x), ols(y, x), r_squared(y, x)
    n_random = min((len(r) for r in data.random_axes), default=0)
    out = {}
    for i, t in enumerate(traits):
        subs = {**{f"random{r}": design(data, traits, (t, r))[1] for r in range(n_random)},
                **{s: design(data, traits, (t, s))[1] for s in traits if s != t}}

        def stat(ix: np.ndarray, i: int = i, subs: dict = subs) -> tuple[float, float]:
            margin = r_squared(y[ix], x[ix]) - max(
                (r_squared(y[ix], v[ix]) for v in subs.values()), default=0.0)
            return float(standardized_ols(y[ix], x[ix])[i]), margin

        boots = cluster_bootstrap_values(groups, stat, n_boot, seed + i)
        sub_r2 = {k: r_squared(y, v) for k, v in subs.items()}
        lo, hi = np.quantile(boots[:, 0], [0.025, 0.975])
        mlo, mhi = np.quantile(boots[:, 1], [0.025, 0.975])
        out[t] = {"b": float(full[i]), "ci_low": float(lo), "ci_high": float(hi),
                  "raw": float(raw[i]), "r2": r2, "substitutes": sub_r2,
                  "margin": r2 - max(sub_r2.values(), default=0.0),
                  "margin_ci_low": float(mlo), "margin_ci_high": float(mhi)}
    return out


def class_table(data: DecisionData, traits: list[str], n_boot: int = 1000,
                seed: int = 0) -> dict[str, dict[str, tuple[float, float, float, str]]]:
    """{trait: {class: (mean, ci_low, ci_high, congruent|contrary|null|unstated)}}: the
    change of P(class) per unit coefficient along the trait's axis, averaged over the
    decisions that offered the class (agent-bootstrap CI), against `expected.EXPECTED`."""
    out = {}
    for n, t in enumerate(traits):
        per: dict[str, list[tuple[int, float]]] = {}
        for k in range(len(data)):
            for c, v in class_mass(data.axes[t][k], data.classes[k]).items():
                per.setdefault(c, []).append((k, v))
        row = {}
        for c, rows in sorted(per.items()):
            v = np.array([x for _, x in rows])
            m, lo, hi = _mean_ci(v, [data.agents[k] for k, _ in rows], n_boot, seed + n)
            row[c] = (m, lo, hi, agreement(t, c, lo, hi))
        out[t] = row
    return out


def changed_check(data: DecisionData, min_changed: float, n_boot: int = 1000,
                  seed: int = 0) -> Check:
    """Required: steering changed the run's decisions by at least `min_changed` (TV), and
    more than random directions of the same norms did."""
    ch = changed(data, n_boot, seed)
    (m, lo, hi), (rm, rlo, rhi) = ch["own"], ch["random"]
    dm, dlo, dhi = ch["own_minus_random"]
    # The paired difference is a point comparison: at 32 agents x 1-2 decisions its CI
    # is about as wide as the difference itself (measured +0.061, CI +0.033..+0.093), so
    # requiring its CI above 0 would fail correct runs; the trait checks carry specificity.
    ok = lo > min_changed and dm > 0
    n_agents = len(set(data.agents))
    return Check(
        "decisions.changed", ok, True,
        f"mean total-variation distance between the option distribution under the agent's "
        f"own steering and under none {m:.3f} (95% CI {lo:.3f}..{hi:.3f}, agent bootstrap; "
        f"{len(data)} decisions of {n_agents} agents); random directions of the same norms "
        f"{rm:.3f} ({rlo:.3f}..{rhi:.3f}); own - random {dm:+.3f} ({dlo:+.3f}..{dhi:+.3f}); "
        f"required: CI above {min_changed:g} and own above random; per class |dP|: "
        + ", ".join(f"{c} {v[0]:.3f}" for c, v in ch["classes"].items()),
        data={"tv": m, "tv_ci_low": lo, "tv_ci_high": hi, "tv_random": rm,
              "tv_random_ci_high": rhi, "tv_minus_random": dm, "tv_minus_random_ci_low": dlo,
              "min_changed": min_changed, "decisions": float(len(data)),
              **{f"class_{c}": v[0] for c, v in ch["classes"].items()}})


def trait_checks(data: DecisionData, traits: list[str], n_boot: int = 1000,
                 seed: int = 0) -> list[Check]:
    """One required check per steered trait (see the module doc), with the expected-
    behaviour table's cells for that trait in its figure (reported, not required)."""
    fit = trait_fit(data, traits, n_boot, seed)
    table = class_table(data, traits, n_boot, seed)
    checks = []
    for t in traits:
        f = fit[t]
        if f is None or len({a for a, al in zip(data.agents, data.alphas, strict=True)
                             if al.get(t, 0.0) != 0}) < 3:
            checks.append(Check(f"decisions.{t}", False, True, "not enough data",
                                detail=f"needs >= 3 agents with a non-zero {t} coefficient"))
            continue
        ok = f["ci_low"] > 0 and f["margin_ci_low"] > 0
        best = max(f["substitutes"], key=f["substitutes"].get)
        cells = table[t]
        checks.append(Check(
            f"decisions.{t}", ok, True,
            f"pooled fit of each decision's own shift on alpha x axis (all steered traits, "
            f"R^2 {f['r2']:.3f}): {t} standardized coefficient {f['b']:+.2f} (95% CI "
            f"{f['ci_low']:+.2f}..{f['ci_high']:+.2f}, agent bootstrap; raw {f['raw']:+.2f}, "
            f"1 = its linear effect); R^2 with another axis in {t}'s place: best {best} "
            f"{f['substitutes'][best]:.3f}, so {t}'s own axis explains {f['margin']:+.3f} more "
            f"(CI {f['margin_ci_low']:+.3f}..{f['margin_ci_high']:+.3f}); required: both CIs "
            f"above 0; P(class) per unit {t}: "
            + ", ".join(f"{c} {m:+.3f} [{a:+.3f}..{b:+.3f}]" + (f" {g}" if g != "unstated"
                                                                  else "")
                        for c, (m, a, b, g) in cells.items()),
            data={"b": f["b"], "ci_low": f["ci_low"], "ci_high": f["ci_high"], "raw": f["raw"],
                  "r2": f["r2"], "margin": f["margin"], "margin_ci_low": f["margin_ci_low"],
                  "margin_ci_high": f["margin_ci_high"],
                  **{f"r2_with_{k}": v for k, v in f["substitutes"].items()},
                  **{f"shift_{c}": m for c, (m, _, _, _) in cells.items()},
                  **{f"shift_{c}_ci_low": a for c, (_, a, _, _) in cells.items()},
                  **{f"shift_{c}_ci_high": b for c, (_, _, b, _) in cells.items()}},
            detail="expected-behaviour cells: " + ", ".join(
                f"{c} {g}" for c, (_, _, _, g) in cells.items() if g != "unstated")))
    return checks
