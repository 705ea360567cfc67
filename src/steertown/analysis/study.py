"""Effect sizes of a study (modes x seeds x arms): steering against each control, paired by seed.

Per run, for every trait t and behaviour or outcome y of `analysis.fingerprint.agent_rates`
(P(talk | someone present), places visited, final coins, ...), the slope of y on the
agents' assigned coefficient of t, across agents (ordinary least squares). A seed gives
the same agents in every mode (the population is sampled from the seed, whatever the
mode), so runs of one arm and seed differ only in how the coefficients reached the
model. The effect of steering against a control mode (placebo, prompt, off) is, per
seed, slope(vectors) - slope(control); its mean over seeds gets a 95% t-interval (n-1
degrees of freedom; none for one seed). Example: the slope of the talk rate on E in
`vectors` minus in `placebo`.

`study_effects` computes it from run directories; `write_study_report` writes
`effects.json`, `effects.csv` and an offline HTML page with a forest plot.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np

from steertown.analysis.fingerprint import agent_rates, measure_names
from steertown.analysis.intervals import mean_ci
from steertown.config import TRAITS, ConfigError
from steertown.config_loading import steering_mode
from steertown.storage.run_dir import RunDir, atomic_write_bytes, atomic_write_json

STEERED_MODE = "vectors"
CONTROL_ORDER = ("placebo", "prompt", "off")
# The behaviour each trait is expected to move (the mock is built to; a real model may not).
HYPOTHESES = {"E": "p_talk", "A": "p_help", "C": "p_work", "O": "p_move", "N": "p_rest"}
MIN_AGENTS = 3


def slope(x: list[float], y: list[float | None]) -> float | None:
    """OLS slope of y on x over the pairs with y present; None without spread or data."""
    pts = [(a, b) for a, b in zip(x, y, strict=True) if b is not None and np.isfinite(b)]
    if len(pts) < MIN_AGENTS:
        return None
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    if np.ptp(xs) == 0:
        return None
    return float(np.polyfit(xs, ys, 1)[0])


def run_slopes(run_dir: str | Path) -> dict[tuple[str, str], float | None]:
    """{(trait, measure): slope across the run's agents}."""
    rates = agent_rates(run_dir)
    out = {}
    for measure in measure_names(rates):
        y = rates.column(measure).to_pylist()
        for t in TRAITS:
            out[(t, measure)] = slope(rates.column(t).to_pylist(), y)
    return out


def describe_run(run_dir: str | Path) -> dict[str, Any]:
    """Arm, steering mode and seed of a run (its cell in the study's grid)."""
    run = RunDir(run_dir).require()
    m = run.read_manifest()
    cfg = m.get("config") or {}
    return {"run_id": run.run_id, "dir": str(run.path), "arm": str(m.get("arm", "custom")),
            "mode": steering_mode(cfg),
            "seed": int(cfg.get("seed", 0))}


def _ci_row(values: list[float]) -> dict[str, Any]:
    m, lo, hi = mean_ci(values)
    return {"mean": m, "ci_low": lo, "ci_high": hi, "n": len(values)}


def study_effects(run_dirs: list[str | Path]) -> dict[str, Any]:
    """Slopes per mode and effects of `vectors` against each control, paired by seed."""
    runs = [describe_run(d) for d in run_dirs]
    seen: dict[tuple, str] = {}
    for r in runs:
        key = (r["arm"], r["mode"], r["seed"])
        if key in seen:
            raise ConfigError(f"runs {seen[key]} and {r['run_id']} share arm, mode and seed "
                             f"{key}: a study has one run per cell")
        seen[key] = r["run_id"]
    slopes = {r["run_id"]: run_slopes(r["dir"]) for r in runs}
    by_cell: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    for r in runs:
        by_cell[(r["arm"], r["mode"])][r["seed"]] = r["run_id"]
    keys = sorted({k for s in slopes.values() for k in s},
                  key=lambda k: (TRAITS.index(k[0]), k[1]))
    slope_rows = []
    for (arm, mode), seeds in sorted(by_cell.items()):
        for t, measure in keys:
            vals = [v for v in (slopes[rid].get((t, measure)) for rid in seeds.values())
                    if v is not None]
            slope_rows.append({"arm": arm, "mode": mode, "trait": t, "measure": measure,
                               **_ci_row(vals)})
    effect_rows = []
    for (arm, mode), steered in sorted(by_cell.items()):
        if mode != STEERED_MODE:
            continue
        controls = [c for c in (*CONTROL_ORDER, *sorted({m for a, m in by_cell if a == arm}))
                    if (arm, c) in by_cell and c != STEERED_MODE]
        for control in dict.fromkeys(controls):
            paired = sorted(set(steered) & set(by_cell[(arm, control)]))
            for t, measure in keys:
                diffs = []
                for seed in paired:
                    a = slopes[steered[seed]].get((t, measure))
                    b = slopes[by_cell[(arm, control)][seed]].get((t, measure))
                    if a is not None and b is not None:
                        diffs.append(a - b)
                row = {"arm": arm, "control": control, "trait": t, "measure": measure,
                       "hypothesis": HYPOTHESES.get(t) == measure, **_ci_row(diffs),
                       "seeds": [s for s in paired]}
                row["effect"] = row.pop("mean")
                effect_rows.append(row)
    return {"runs": runs, "slopes": slope_rows, "effects": effect_rows,
            "method": "per seed: OLS slope across agents of the measure on the assigned "
                      "coefficient, vectors minus control; mean over seeds, 95% t-interval"}


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:+.3f}" if isinstance(v, float) else str(v)


def format_effects(result: dict[str, Any], only_hypotheses: bool = True) -> str:
    """The effects as a Markdown table (the expected trait-behaviour pairs by default)."""
    rows = [r for r in result["effects"] if r["hypothesis"] or not only_hypotheses]
    lines = ["| arm | control | trait | measure | effect (vectors - control) | 95% CI | seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else "n/a"
        lines.append(f"| {r['arm']} | {r['control']} | {r['trait']} | {r['measure']} | "
                     f"{_fmt(r['effect'])} | {ci} | {r['n']} |")
    if len(lines) == 2:
        lines.append("| (no vectors run paired with a control by seed) | | | | | | |")
    return "\n".join(lines)


def effects_chart(result: dict[str, Any]) -> alt.TopLevelMixin:
    """Forest plot: effect and CI per trait-behaviour hypothesis, one colour per control."""
    rows = [{"pair": f"{r['trait']} -> {r['measure']}", "control": r["control"],
             "arm": r["arm"], "effect": r["effect"],
             "low": r["ci_low"] if r["ci_low"] is not None else r["effect"],
             "high": r["ci_high"] if r["ci_high"] is not None else r["effect"], "n": r["n"]}
            for r in result["effects"] if r["hypothesis"] and r["effect"] is not None]
    base = alt.Chart(alt.Data(values=rows)).encode(
        y=alt.Y("pair:N", title=None), yOffset="control:N",
        color=alt.Color("control:N", title="control"))
    zero = alt.Chart(alt.Data(values=[{"x": 0}])).mark_rule(color="gray").encode(x="x:Q")
    return (zero + base.mark_rule().encode(x=alt.X("low:Q", title="slope difference "
                                                   "(vectors - control)"), x2="high:Q")
            + base.mark_point(filled=True).encode(
                x="effect:Q", tooltip=["pair:N", "control:N", "arm:N", "effect:Q", "low:Q",
                                       "high:Q", "n:Q"])
            ).properties(width=480, title="Effect of steering against each control "
                                          "(mean over seeds, 95% CI)")


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    cols = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows([{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()}
                 for r in rows])
    return buf.getvalue().encode()


def write_study_report(result: dict[str, Any], out_dir: str | Path,
                       title: str = "steertown study") -> Path:
    """`effects.json`, `effects.csv`, `slopes.csv`, `effects.png` and `index.html` (offline)."""
    import vl_convert as vlc
    from markupsafe import Markup

    from steertown.analysis.charts import save_png
    from steertown.analysis.report import render_fragment

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "effects.json", result)
    atomic_write_bytes(out / "effects.csv", _csv(result["effects"]))
    atomic_write_bytes(out / "slopes.csv", _csv(result["slopes"]))
    chart = effects_chart(result)
    save_png(chart, out / "effects.png")
    css = (Path(__file__).parent / "templates" / "report.css").read_text()
    page = render_fragment("study.html.j2", title=title, result=result, chart=chart,
                           css=Markup(css), vega_bundle=Markup(vlc.javascript_bundle()),
                           hypotheses=[r for r in result["effects"] if r["hypothesis"]])
    path = out / "index.html"
    atomic_write_bytes(path, str(page).encode())
    return path


def effect_metrics(result: dict[str, Any]) -> dict[str, float]:
    """`effect.<arm>.<control>.<trait>.<measure>` (and `_ci_low`/`_ci_high`) for the
    expected trait-behaviour pairs: the numbers a study's MLflow parent run carries."""
    out = {}
    for r in result["effects"]:
        if not r["hypothesis"] or r["effect"] is None:
            continue
        key = f"effect.{r['arm']}.{r['control']}.{r['trait']}.{r['measure']}"
        out[key] = r["effect"]
        if r["ci_low"] is not None:
            out[key + "_ci_low"], out[key + "_ci_high"] = r["ci_low"], r["ci_high"]
    return out


def tracked_run_dirs(runs: list[dict[str, Any]], root: Path = Path(".")) -> list[Path]:
    """Run directories of tracked runs (tracking.search_runs rows): `<storage_dir>/<run_id>`
    from each run's logged config, relative to `root`; runs whose directory is gone are
    left out."""
    out = []
    for r in runs:
        path = Path(root) / r["params"].get("storage_dir", "storage/dumps") / r["run_id"]
        if RunDir(path).exists():
            out.append(path)
    return out


def modes_of(runs: list[dict[str, Any]]) -> set[str]:
    """Steering modes of tracked runs (from their logged config)."""
    return {r["params"].get("steering.mode", STEERED_MODE) for r in runs}
