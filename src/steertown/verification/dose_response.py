"""Dose-response sweeps on held-out items: trait vs random directions, cross-trait matrix.

One `run_sweep` call scores everything the verification needs in a few batched passes:

- per swept trait t: t's held-out situations at every coefficient (margin readout) and
  t's held-out Likert items at every coefficient (Likert readout) -> `DoseFit`s;
- controls at +-c (c = the largest |coefficient|): every trait direction and every
  random direction on every trait's situations -> finite-difference slopes
  `(m(+c) - m(-c)) / 2c`, giving the 5x5 cross-trait matrix (steer i, measure j) and,
  per trait, the random directions' slopes on that trait's readout.

The trait's slope is judged against the random directions' slopes, not against zero:
any push of that size moves the margin somewhat, so only a larger, signed effect along
the trait direction shows the vector carries the trait.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steertown.stats import DoseFit, dose_fit
from steertown.steering.contrast_data import ContrastData, LikertItem, SituationItem
from steertown.verification.readouts import (
    Scorer,
    Steer,
    likert_scores,
    margin_scores,
    norm_steer,
    random_directions,
)


def sweep_coefficients(coefficients: list[float], run_max_alpha: float = 0.0) -> list[float]:
    """Sorted unique coefficients including 0 and covering +-`run_max_alpha`."""
    cs = {float(c) for c in coefficients} | {0.0}
    top = max(abs(c) for c in cs)
    if run_max_alpha > top + 1e-9:  # the run steered harder than the sweep reaches
        cs |= {run_max_alpha, -run_max_alpha}
    return sorted(cs)


def held_out(data: ContrastData, trait: str, n: int) -> tuple[list[SituationItem], list[LikertItem]]:
    """First `n` held-out situations and Likert items of `trait` (never vector data)."""
    sits = [s for s in data.situations if s.trait == trait][:n]
    liks = [q for q in data.likert if q.trait == trait][:n]
    return sits, liks


@dataclass
class SweepPlan:
    """What to sweep; `traits` get the full coefficient sweep, all traits get controls."""

    traits: list[str]
    coefficients: list[float]
    items_per_trait: int = 8
    control_items: int = 4  # situations per trait for random/cross controls (cost: see docs)
    likert_items: int = 4  # Likert statements per trait (the readout barely moves; see docs)
    n_random: int = 4
    seed: int = 0
    likert: bool = True
    cross: bool = True
    all_traits: list[str] = field(default_factory=lambda: ["E", "A", "C", "O", "N"])
    n_boot: int = 1000

    @property
    def control_coef(self) -> float:
        return max(abs(c) for c in self.coefficients)


@dataclass
class TraitSweep:
    """Results for one trait direction."""

    trait: str
    margin: DoseFit
    likert: DoseFit | None
    fd_slope: float  # finite-difference margin slope at +-c on the control items (as randoms)
    random_slopes: list[float]  # random directions' fd slopes on this trait's margin

    @property
    def random_max(self) -> float:
        return max((abs(s) for s in self.random_slopes), default=0.0)

    @property
    def vs_random(self) -> float:
        """Trait fd slope / largest random |fd slope| (> 1: beats every random direction).

        A slope that is not positive is never "infinitely" better than a zero random
        slope: it gets -inf there, so no threshold lets it pass.
        """
        if self.random_max > 0:
            return self.fd_slope / self.random_max
        return float("inf") if self.fd_slope > 0 else float("-inf")

    def to_dict(self) -> dict:
        return {"trait": self.trait, "margin": self.margin.to_dict(),
                "likert": self.likert.to_dict() if self.likert else None,
                "fd_slope": self.fd_slope, "random_slopes": self.random_slopes,
                "random_max": self.random_max, "vs_random": self.vs_random}


@dataclass
class SweepResult:
    traits: dict[str, TraitSweep]
    coefficients: list[float]
    control_coef: float
    cross: dict[str, dict[str, float]]  # steered direction -> measured trait -> fd slope
    seconds: float
    forward_tokens: int

    def to_dict(self) -> dict:
        return {"traits": {t: r.to_dict() for t, r in self.traits.items()},
                "coefficients": self.coefficients, "control_coef": self.control_coef,
                "cross": self.cross, "seconds": self.seconds,
                "forward_tokens": self.forward_tokens}


def _fd(scores: dict[tuple[str, Steer], float], items: list[SituationItem], direction: str,
        c: float) -> float:
    """Mean over items of (m(+c) - m(-c)) / 2c along `direction`."""
    d = [scores[(it.id, norm_steer((direction, c)))] - scores[(it.id, norm_steer((direction, -c)))]
         for it in items]
    return float(np.mean(d) / (2 * c))


def run_sweep(backend: Any, data: ContrastData, plan: SweepPlan,
              directions: dict[str, dict[int, Any]] | None = None,
              trait_direction: dict[str, str] | None = None,
              random: dict[str, dict[int, Any]] | None = None,
              progress: Any = None) -> SweepResult:
    """Score the plan on `backend` and fit it.

    `directions` adds named per-layer vectors (the layer sweep steers a trait at a layer
    the backend's hooks do not cover); `trait_direction[t]` then names the direction
    that stands for trait t (default: the backend's own trait vector). `random` replaces
    the plan's seeded random directions at the backend's layers. `progress(n, total=)`
    is told of every scored prompt.
    """
    t0 = time.perf_counter()
    rand = random if random is not None else random_directions(backend, plan.n_random, plan.seed)
    scorer = Scorer(backend, {**rand, **(directions or {})})
    tdir = {t: (trait_direction or {}).get(t, t) for t in plan.all_traits}
    c = plan.control_coef
    items = {t: held_out(data, t, plan.items_per_trait) for t in plan.all_traits}
    ctrl = {t: items[t][0][:plan.control_items] for t in plan.all_traits}
    m_jobs: list[tuple[SituationItem, Steer]] = []
    l_jobs: list[tuple[LikertItem, Steer]] = []
    for t in plan.traits:
        sits, liks = items[t]
        m_jobs += [(it, (tdir[t], k)) for it in sits for k in plan.coefficients]
        if plan.likert:
            l_jobs += [(it, (tdir[t], k)) for it in liks[:plan.likert_items]
                       for k in plan.coefficients]
        # Random directions are judged on each swept trait's own readout.
        m_jobs += [(it, (r, s * c)) for r in rand for it in ctrl[t] for s in (-1, 1)]
    if plan.cross:  # every trait direction on every trait's items at +-c
        m_jobs += [(it, (tdir[i], s * c)) for i in plan.all_traits
                   for j in plan.all_traits for it in ctrl[j] for s in (-1, 1)]
    if progress is not None:
        progress(0, total=len({(it.id, norm_steer(st)) for it, st in m_jobs})
                 + len({(it.id, norm_steer(st)) for it, st in l_jobs}))
        scorer.on_rows = progress
    margins = margin_scores(scorer, m_jobs)
    likerts = likert_scores(scorer, l_jobs) if l_jobs else {}
    out: dict[str, TraitSweep] = {}
    for k, t in enumerate(plan.traits):
        sits, liks = items[t]
        grid = np.array([[margins[(it.id, norm_steer((tdir[t], x)))] for x in plan.coefficients]
                         for it in sits])
        lk = None
        if plan.likert and liks:
            lgrid = np.array([[likerts[(it.id, norm_steer((tdir[t], x)))]
                               for x in plan.coefficients] for it in liks[:plan.likert_items]])
            lk = dose_fit(lgrid, plan.coefficients, plan.n_boot, plan.seed + k)
        out[t] = TraitSweep(t, dose_fit(grid, plan.coefficients, plan.n_boot, plan.seed + k), lk,
                            _fd(margins, ctrl[t], tdir[t], c),
                            [_fd(margins, ctrl[t], r, c) for r in rand])
    cross = {}
    if plan.cross:
        cross = {i: {j: _fd(margins, ctrl[j], tdir[i], c) for j in plan.all_traits}
                 for i in plan.all_traits}
    return SweepResult(out, list(plan.coefficients), c, cross,
                       round(time.perf_counter() - t0, 2), scorer.forward_tokens)


def cross_summary(cross: dict[str, dict[str, float]]) -> dict[str, float]:
    """Diagonal vs off-diagonal of the cross-trait matrix (mean |slope|, diagonal wins)."""
    if not cross:
        return {}
    keys = list(cross)
    diag = [cross[i][i] for i in keys]
    off = [abs(cross[i][j]) for i in keys for j in keys if i != j]
    # A trait "owns" its readout when its slope there beats every other direction's.
    wins = sum(cross[j][j] > max(abs(cross[i][j]) for i in keys if i != j) for j in keys)
    return {"diag_mean": float(np.mean(diag)), "offdiag_mean_abs": float(np.mean(off)),
            "diag_wins": float(wins), "traits": float(len(keys))}


def format_matrix(cross: dict[str, dict[str, float]]) -> str:
    """Markdown table: rows = steered direction, columns = measured trait."""
    keys = list(cross)
    lines = ["| steer \\ measure | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for i in keys:
        cells = [f"**{cross[i][j]:+.2f}**" if i == j else f"{cross[i][j]:+.2f}" for j in keys]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
