"""`steertown compare`: runs side by side from MLflow, seeds as replicates within an arm.

Writes `runs.csv` (one row per run, every metric), `arms.csv` and `comparison.md`
(mean and 95% CI per arm of the key metrics; t-distribution, n-1 degrees of freedom)
and `compare_metrics.png`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import altair as alt

from steertown import tracking
from steertown.analysis import study
from steertown.analysis.charts import save_png
from steertown.analysis.intervals import mean_ci
from steertown.config import ConfigError
from steertown.config_loading import steering_mode_of_params
from steertown.storage.run_dir import atomic_write_bytes

# Headline metrics, as logged by the flow (with or without a prefix such as "analysis.").
KEY_METRICS: tuple[str, ...] = (
    "mean_tick_seconds", "total_tick_seconds", "model_seconds_share", "success_rate",
    "actions_per_tick", "tokens_out_per_message", "tokens_out", "nonzero_steering_share",
    "spearman_TALK_E", "spearman_WORK_C", "spearman_REST_N",
)


def _key_columns(runs: list[dict]) -> dict[str, str]:
    """KEY_METRICS name -> the logged metric name that carries it (shortest match).

    Bare per-tick metric names (tokens_out, success_rate...) hold the last tick's value,
    not the run's, so they never stand for a key metric.
    """
    names = {m for r in runs for m in r["metrics"]} - set(tracking.TICK_METRICS)
    out = {}
    for key in KEY_METRICS:
        hits = sorted((n for n in names if n == key or n.endswith("." + key)), key=len)
        if hits:
            out[key] = hits[0]
    return out


def _csv(rows: list[dict], columns: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def _f(v: Any) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def compare_runs(arms: list[str] | None, run_ids: list[str] | None, tracking_uri: str,
                 out_dir: Path) -> Path:
    """Compare tracked runs (filtered by arm and/or run id); return the Markdown file's path."""
    runs = tracking.search_runs(tracking_uri, arms=arms, run_ids=run_ids)
    if not runs:
        what = ", ".join(filter(None, [f"arms {arms}" if arms else "", f"runs {run_ids}" if run_ids else ""]))
        raise ConfigError(f"no tracked runs found in {tracking_uri}" + (f" for {what}" if what else ""))
    modes = {steering_mode_of_params(r["params"]) for r in runs}
    if len(modes) > 1:  # one group per arm and mode: seeds are the replicates
        for r in runs:
            r["arm"] = f"{r['arm']}/{steering_mode_of_params(r['params'])}"
    runs.sort(key=lambda r: (str(r["arm"]), str(r["seed"]), r["run_id"]))
    keys = _key_columns(runs)
    out_dir.mkdir(parents=True, exist_ok=True)

    all_metrics = sorted({m for r in runs for m in r["metrics"]})
    run_rows = [{"run_id": r["run_id"], "arm": r["arm"], "seed": r["seed"], "status": r["status"],
                 "config_hash": r["tags"].get("config_hash"), **r["metrics"]} for r in runs]
    atomic_write_bytes(out_dir / "runs.csv",
                       _csv(run_rows, ["run_id", "arm", "seed", "status", "config_hash", *all_metrics]))

    arm_rows, long = [], []
    for arm in sorted({str(r["arm"]) for r in runs}):
        members = [r for r in runs if str(r["arm"]) == arm]
        row: dict[str, Any] = {"arm": arm, "runs": len(members),
                               "seeds": ",".join(sorted({str(r["seed"]) for r in members}))}
        for key, col in keys.items():
            m, lo, hi = mean_ci([r["metrics"].get(col) for r in members])
            row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"] = m, lo, hi
            if m is not None:
                long.append({"arm": arm, "metric": key, "mean": m, "low": lo if lo is not None else m,
                             "high": hi if hi is not None else m, "n": len(members)})
        arm_rows.append(row)
    arm_cols = ["arm", "runs", "seeds"] + [c for k in keys for c in (k, f"{k}_ci_low", f"{k}_ci_high")]
    atomic_write_bytes(out_dir / "arms.csv", _csv(arm_rows, arm_cols))

    md = ["# steertown comparison", "",
          f"Tracking store: `{tracking_uri}`; {len(runs)} run(s). Per arm: mean [95% CI] over "
          "seeds (t-distribution; no CI for a single run).", "",
          "| arm | runs | seeds | " + " | ".join(keys) + " |",
          "|---|---|---|" + "---|" * len(keys)]
    for row in arm_rows:
        cells = []
        for k in keys:
            m, lo, hi = row[k], row[f"{k}_ci_low"], row[f"{k}_ci_high"]
            cells.append(_f(m) + (f" [{_f(lo)}, {_f(hi)}]" if lo is not None else ""))
        md.append(f"| {row['arm']} | {row['runs']} | {row['seeds']} | " + " | ".join(cells) + " |")
    md += ["", "## Runs", "", "| run_id | arm | seed | status | " + " | ".join(keys) + " |",
           "|---|---|---|---|" + "---|" * len(keys)]
    for r in runs:
        md.append(f"| {r['run_id']} | {r['arm']} | {r['seed']} | {r['status']} | "
                  + " | ".join(_f(r["metrics"].get(c)) for c in keys.values()) + " |")
    md += ["", "All metrics: `runs.csv`; per-arm means and CIs: `arms.csv`; chart: "
           "`compare_metrics.png`.", ""]
    dirs = study.tracked_run_dirs(runs) if len(modes) > 1 else []
    if dirs:
        md += ["## Effects of steering against each control (paired by seed)", ""]
        try:
            effects = study.study_effects(dirs)
        except ConfigError as e:  # e.g. two runs in one cell: the comparison still stands
            md += [f"Not computed: {e}", ""]
        else:
            page = study.write_study_report(effects, out_dir / "effects")
            md += [study.format_effects(effects), "",
                   f"Every trait x measure: `effects/effects.csv`; report: `{page}`.", ""]
    md_path = out_dir / "comparison.md"
    atomic_write_bytes(md_path, "\n".join(md).encode())

    if long:
        base = alt.Chart(alt.Data(values=long)).encode(y=alt.Y("arm:N", title=None))
        chart = (base.mark_bar(opacity=0.7).encode(x=alt.X("mean:Q", title=None),
                                                   tooltip=["arm:N", "mean:Q", "low:Q", "high:Q", "n:Q"])
                 + base.mark_rule(color="black").encode(x="low:Q", x2="high:Q")
                 ).properties(width=220, height=alt.Step(22)).facet(
            facet=alt.Facet("metric:N", title=None), columns=3
        ).resolve_scale(x="independent").properties(
            title="Key metrics per arm (mean, 95% CI over seeds)")
        save_png(chart, out_dir / "compare_metrics.png")
    return md_path
