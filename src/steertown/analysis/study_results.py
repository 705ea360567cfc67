"""The numbers of a preregistered study (modes x seeds), computed from its run directories.

- **slopes**: per run, for every trait x measure of `fingerprint.agent_rates`, the OLS
  slope of the agents' measure on their assigned coefficient of the trait
  (`analysis.study.run_slopes`).
- **effects**: per contrast (mode a - mode b, paired by seed: same agents, same
  coefficients) x trait x measure, the mean over seeds of slope(a) - slope(b) with a 95%
  t-interval and a two-sided one-sample t-test (`study_stats.t_summary`). Families:
  `primary` = vectors - placebo on each trait's primary outcome (five tests, Holm);
  `secondary: a - b` = each other contrast on the primary outcomes (Holm within it);
  `exploratory` = every other trait x measure (uncorrected).
- **society**: per run the society at the last tick (density, clustering, Gini of coins,
  share of agents who met their goal, news reach, mean coins, interaction counts); per
  mode the mean over seeds with a 95% t-interval, and paired differences against the
  control modes.
- **verification**: per verified cell, what its `steertown verify` found (verdict, the
  required checks that failed, the decisions' total-variation change against random
  directions, how many `decisions.<T>` trait checks passed), from its report.json.

`study_numbers` returns all of it as plain data; `study_results_report` writes the files.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from steertown.analysis.study import run_slopes
from steertown.analysis.study_stats import holm, t_summary
from steertown.config import TRAITS
from steertown.storage.run_dir import RunDir

# Preregistered primary outcome per trait (studies/town-v1/preregistration.md).
PRIMARY = {"E": "p_talk", "A": "p_help", "C": "p_work", "O": "places_visited", "N": "p_rest"}
CONTRASTS = (("vectors", "placebo"), ("vectors", "prompt"), ("vectors", "off"),
             ("prompt", "off"))
PRIMARY_CONTRAST = ("vectors", "placebo")
SOCIETY_CONTRASTS = (("vectors", "placebo"), ("vectors", "off"), ("prompt", "off"))
SOCIETY_OUTCOMES = ("density", "clustering", "gini_coins", "goals_met_share", "news_reach",
                    "mean_coins")
ALPHA = 0.05


def contrast_name(a: str, b: str) -> str:
    return f"{a} - {b}"


def family_of(a: str, b: str, trait: str, measure: str) -> str:
    """The preregistered family of a test (Holm runs within each non-exploratory one)."""
    if PRIMARY.get(trait) != measure:
        return "exploratory"
    return "primary" if (a, b) == PRIMARY_CONTRAST else f"secondary: {contrast_name(a, b)}"


def society_values(run_dir: str | Path) -> dict[str, float]:
    """The run's society at its last tick, from `analysis/summary.json` (the analyze stage's
    record): the SOCIETY_OUTCOMES and `interactions_<type>` counts."""
    summary = json.loads((RunDir(run_dir).path / "analysis" / "summary.json").read_text())
    soc = summary.get("society") or {}
    final = soc.get("final") or {}
    out = {k: final.get(k) for k in SOCIETY_OUTCOMES if k != "goals_met_share"}
    out["goals_met_share"] = soc.get("goals_met_share")
    for kind, n in sorted((soc.get("interactions") or {}).items()):
        out[f"interactions_{kind.lower()}"] = n
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}


def slope_rows(cells: list[dict]) -> list[dict]:
    """One row per complete run x trait x measure: run_id, arm, seed, mode, trait,
    measure, slope (None where undefined)."""
    rows = []
    for c in cells:
        if not c["complete"]:
            continue
        slopes = run_slopes(c["dir"])
        for (trait, measure), value in sorted(slopes.items(),
                                              key=lambda kv: (TRAITS.index(kv[0][0]), kv[0][1])):
            rows.append({"run_id": c["run_id"], "arm": c["arm"], "seed": c["seed"],
                         "mode": c["mode"], "trait": trait, "measure": measure,
                         "slope": value})
    return rows


def _paired(values: dict[tuple, dict[int, float | None]], arm: str, a: str, b: str, key: Any
            ) -> tuple[list[int], list[float]]:
    """Seeds with both modes defined and their differences a - b."""
    va, vb = values.get((arm, a, key), {}), values.get((arm, b, key), {})
    seeds = sorted(s for s in set(va) & set(vb) if va[s] is not None and vb[s] is not None)
    return seeds, [va[s] - vb[s] for s in seeds]


def effect_rows(slopes: list[dict]) -> list[dict]:
    """Every contrast x trait x measure (for the modes present), Holm within families."""
    values: dict[tuple, dict[int, float | None]] = defaultdict(dict)
    for r in slopes:
        values[(r["arm"], r["mode"], (r["trait"], r["measure"]))][r["seed"]] = r["slope"]
    modes = {(r["arm"], r["mode"]) for r in slopes}
    keys = sorted({(r["trait"], r["measure"]) for r in slopes},
                  key=lambda k: (TRAITS.index(k[0]), PRIMARY.get(k[0]) != k[1], k[1]))
    rows = []
    for arm in sorted({a for a, _ in modes}):
        for a, b in CONTRASTS:
            if (arm, a) not in modes or (arm, b) not in modes:
                continue
            for trait, measure in keys:
                seeds, diffs = _paired(values, arm, a, b, (trait, measure))
                rows.append({"arm": arm, "contrast": contrast_name(a, b), "mode_a": a,
                             "mode_b": b, "trait": trait, "measure": measure,
                             "family": family_of(a, b, trait, measure),
                             **t_summary(diffs), "p_holm": None,
                             "seeds": " ".join(map(str, seeds))})
    families: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["family"] != "exploratory":
            families[(r["arm"], r["family"])].append(r)
    for members in families.values():
        for r, adj in zip(members, holm([r["p"] for r in members]), strict=True):
            r["p_holm"] = adj
    return rows


def result_word(row: dict, alpha: float = ALPHA) -> str:
    """`a > b`, `a < b` (Holm-adjusted p < alpha) or `not detected` for a corrected row;
    for an exploratory row `p < alpha uncorrected` or `-`."""
    if row.get("family") == "exploratory":
        return f"p < {alpha} uncorrected" if row["p"] is not None and row["p"] < alpha else "-"
    if row["p_holm"] is None or row["mean"] is None or row["p_holm"] >= alpha:
        return "not detected"
    return f"{row['mode_a']} > {row['mode_b']}" if row["mean"] > 0 else \
        f"{row['mode_a']} < {row['mode_b']}"


def society_rows(cells: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(per run values, per mode mean and CI, paired differences against controls)."""
    per_run = []
    for c in cells:
        if c["complete"]:
            for outcome, v in society_values(c["dir"]).items():
                per_run.append({"run_id": c["run_id"], "arm": c["arm"], "seed": c["seed"],
                                "mode": c["mode"], "outcome": outcome, "value": v})
    # An interaction type a run never had happened 0 times there.
    kinds = sorted({r["outcome"] for r in per_run if r["outcome"].startswith("interactions_")})
    have = {(r["run_id"], r["outcome"]) for r in per_run}
    for c in cells:
        if c["complete"]:
            per_run += [{"run_id": c["run_id"], "arm": c["arm"], "seed": c["seed"],
                         "mode": c["mode"], "outcome": k, "value": 0.0}
                        for k in kinds if (c["run_id"], k) not in have]
    values: dict[tuple, dict[int, float | None]] = defaultdict(dict)
    for r in per_run:
        values[(r["arm"], r["mode"], r["outcome"])][r["seed"]] = r["value"]
    outcomes = [o for o in SOCIETY_OUTCOMES if any(r["outcome"] == o for r in per_run)] + \
        sorted({r["outcome"] for r in per_run} - set(SOCIETY_OUTCOMES))
    modes = sorted({(r["arm"], r["mode"]) for r in per_run},
                   key=lambda am: (am[0], _mode_order(am[1])))
    by_mode = []
    for arm, mode in modes:
        for o in outcomes:
            s = t_summary(list(values.get((arm, mode, o), {}).values()))
            by_mode.append({"arm": arm, "mode": mode, "outcome": o, "mean": s["mean"],
                            "ci_low": s["ci_low"], "ci_high": s["ci_high"], "n": s["n"]})
    paired = []
    for arm in sorted({a for a, _ in modes}):
        for a, b in SOCIETY_CONTRASTS:
            if (arm, a) not in modes or (arm, b) not in modes:
                continue
            for o in outcomes:
                seeds, diffs = _paired(values, arm, a, b, o)
                paired.append({"arm": arm, "contrast": contrast_name(a, b), "outcome": o,
                               **t_summary(diffs), "seeds": " ".join(map(str, seeds)),
                               "family": "exploratory"})
    return per_run, by_mode, paired


def _mode_order(mode: str) -> int:
    order = ("vectors", "placebo", "prompt", "off")
    return order.index(mode) if mode in order else len(order)


def verification_rows(cells: list[dict]) -> list[dict]:
    """Per cell the study verified (`verdict` set), its verify report in numbers."""
    rows = []
    for c in cells:
        path = Path(c["dir"]) / "verification" / "report.json"
        if not c.get("verdict") or not path.is_file():
            continue
        checks = {k["name"]: k for k in json.loads(path.read_text())["checks"]}
        changed = checks.get("decisions.changed", {}).get("data", {})
        traits = [checks[f"decisions.{t}"] for t in TRAITS if f"decisions.{t}" in checks]
        rows.append({"run_id": c["run_id"], "seed": c["seed"], "mode": c["mode"],
                     "verdict": c["verdict"], "tv": changed.get("tv"),
                     "tv_ci_low": changed.get("tv_ci_low"),
                     "tv_ci_high": changed.get("tv_ci_high"),
                     "tv_random": changed.get("tv_random"),
                     "traits_passed": sum(bool(k["passed"]) for k in traits),
                     "traits_checked": len(traits),
                     "failed": " ".join(n for n, k in checks.items()
                                        if k["required"] and k["passed"] is False)})
    return rows


def study_numbers(cells: list[dict]) -> dict[str, Any]:
    """Everything the results report: cells (as planned, with `complete` and `verdict`),
    slopes, effects, society. `cells`: dicts with run_id, arm, seed, mode, dir, complete,
    verdict (None if not verified)."""
    slopes = slope_rows(cells)
    per_run, by_mode, paired = society_rows(cells)
    complete = [c for c in cells if c["complete"]]
    commits = sorted({str(RunDir(c["dir"]).read_manifest().get("git_sha", "unknown"))
                      for c in complete})
    return {"cells": cells, "complete": len(complete) == len(cells) and bool(cells),
            "n_complete": len(complete), "slopes": slopes, "effects": effect_rows(slopes),
            "society_runs": per_run, "society": by_mode, "society_paired": paired,
            "verification": verification_rows(cells),
            "commits": commits, "alpha": ALPHA, "primary": PRIMARY}
