"""`write_report`: `reports/<run_id>/index.html`, one self-contained page per run.

The Vega/Vega-Lite/vega-embed JavaScript comes from vl-convert's offline bundle and is
inlined once; every chart's spec (data included) is inlined beside it, so the page opens
without network. PNGs of the same charts lie beside the page (and show where scripts
are off).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import vl_convert as vlc

from steertown.analysis.charts import draw_charts
from steertown.analysis.summary import analyze_run
from steertown.config import flatten
from steertown.storage.run_dir import RunDir, RunDirError, atomic_write_bytes, atomic_write_json

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;margin-bottom:16px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:10px 12px}
.card .v{font-size:1.4em;font-weight:600}.card .k{color:#57606a;font-size:.85em}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eaeef2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.na{color:#57606a}
.verdict{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.verdict.pass{background:#1a7f37;color:#fff}.verdict.fail{background:#cf222e;color:#fff}
.verdict.na{background:#6e7781;color:#fff}
.chart{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px;margin:12px 0;
overflow-x:auto}
.grid2{display:grid;grid-template-columns:auto minmax(0,1fr);gap:24px}.grid2>div{min-width:0;overflow-x:auto}
details{overflow-x:auto}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
"""

CHART_TITLES = {
    "action_distribution": "Action type distribution",
    "steering_heatmap": "Steering profiles",
    "activity_over_time": "Activity over time",
    "token_usage": "Token usage",
    "success_by_action": "Success and failure rates",
    "behaviour_vs_trait": "Behaviour against traits",
}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _short(v: Any) -> Any:
    """Floats inside nested data cut to 4 significant digits, for display."""
    if isinstance(v, float):
        return float(f"{v:.4g}")
    if isinstance(v, dict):
        return {k: _short(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_short(x) for x in v]
    return v


def _fmt(v: Any) -> str:
    if v is None:
        return '<span class="na">n/a</span>'
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return _e(f"{v + 0.0:.4g}")  # + 0.0 turns -0.0 into 0
    if isinstance(v, list | dict):
        return _e(json.dumps(_short(v), default=str))
    return _e(v)


def _kv(d: dict) -> str:
    """A two-column key/value table (left-aligned: the values mix numbers and text)."""
    return _table([{"key": k, "value": v} for k, v in d.items()], align_numbers=False)


def _table(rows: list[dict], columns: list[str] | None = None, limit: int = 0,
           align_numbers: bool = True) -> str:
    """A generic HTML table of dict rows (columns: given order, else first-seen keys)."""
    if not rows:
        return '<p class="na">none</p>'
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    shown = rows[:limit] if limit else rows
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for r in shown:
        cells = []
        for c in columns:
            v = r.get(c)
            num = isinstance(v, int | float) and not isinstance(v, bool)
            cls = ' class="num"' if num and align_numbers else ""
            cells.append(f"<td{cls}>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (f'<p class="na">{len(rows) - len(shown)} more rows in summary.json</p>'
            if len(shown) < len(rows) else "")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _cards(items: list[tuple[str, Any, str]]) -> str:
    out = []
    for label, v, fmt in items:
        if v is None:
            val = "n/a"
        elif fmt == "%":
            val = f"{v:.1%}"
        elif fmt:
            val = format(v, fmt)
        else:
            val = str(v)
        out.append(f'<div class="card"><div class="v">{_e(val)}</div>'
                   f'<div class="k">{_e(label)}</div></div>')
    return f'<div class="cards">{"".join(out)}</div>'


def _verification(run_dir: Path) -> str:
    path = run_dir / "verification" / "report.json"
    if not path.is_file():
        return '<p class="na">No verification report for this run (run <code>steertown verify</code>).</p>'
    try:
        rep = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f'<p class="fail">{_e(path)}: unreadable ({_e(e)})</p>'
    verdict = rep.get("verdict")
    key = verdict.lower() if isinstance(verdict, str) else verdict
    cls = {"pass": "pass", "passed": "pass", True: "pass", "fail": "fail", "failed": "fail",
           False: "fail"}.get(key, "na")
    checks = []
    for c in rep.get("checks", []):
        row = dict(c)
        if "passed" in row:
            ok = row["passed"]
            row["passed"] = {True: "PASS", False: "FAIL", None: "SKIP"}.get(ok, ok)
        checks.append(row)
    preferred = ["name", "passed", "required", "figure", "detail"]
    cols = preferred + [k for k in dict.fromkeys(k for c in checks for k in c) if k not in preferred]
    table = _table(checks, cols).replace("<td>PASS</td>", '<td class="pass">PASS</td>').replace(
        "<td>FAIL</td>", '<td class="fail">FAIL</td>').replace(
        "<td>SKIP</td>", '<td class="na">SKIP</td>')
    extra = {k: v for k, v in rep.items() if k not in ("checks", "verdict")}
    extra_html = (f"<details><summary>More</summary><pre>{_e(json.dumps(extra, indent=2, default=str))}"
                  f"</pre></details>" if extra else "")
    return f'<p>Verdict: <span class="verdict {cls}">{_e(verdict)}</span></p>{table}{extra_html}'


def _chart_divs(charts: dict[str, Any]) -> tuple[str, str]:
    divs, calls = [], []
    for i, (name, chart) in enumerate(charts.items()):
        spec = json.dumps(chart.to_dict(), default=str).replace("</", "<\\/")
        # The chart carries its own title; the anchor lets readers link to it.
        divs.append(f'<div class="chart" id="{_e(name)}" title="{_e(CHART_TITLES.get(name, name))}">'
                    f'<div id="chart{i}"></div><noscript><img src="{_e(name)}.png" '
                    f'alt="{_e(name)}"></noscript><p><a href="{_e(name)}.png">{_e(name)}.png</a>'
                    f"</p></div>")
        calls.append(f'vegaEmbed("#chart{i}", {spec}, {{"actions": false}})'
                     f".catch(function(e){{console.error(e);}});")
    return "".join(divs), "\n".join(calls)


def _highlights(s: dict) -> str:
    c, tim, km = s["counts"], s["timings"], s["key_metrics"]
    items = [("agents", c["agents"], ""), ("ticks", c["ticks"], ""),
             ("actions", c["actions"], ","), ("messages", c["messages"], ","),
             ("success rate", km.get("success_rate"), "%"),
             ("tokens in / out", f"{km.get('tokens_in', 0):,.0f} / {km.get('tokens_out', 0):,.0f}", ""),
             ("mean tick seconds", tim.get("mean_tick_seconds"), ".3g"),
             ("model share of tick time", tim.get("model_seconds_share"), "%"),
             ("messages with non-zero steering", km.get("nonzero_steering_share"), "%"),
             ("agents steered", s["steering"]["presence"].get("agents_steered"), "")]
    means = ", ".join(f"{r['trait']} {r['logged_mean']:+.2f}" for r in s["steering"]["traits"]
                      if r["logged_mean"] is not None)
    return _cards(items) + (f"<p>Mean logged alpha per trait (over agents): <b>{_e(means)}</b></p>"
                            if means else "")


def render_html(run_dir: Path, summary: dict, charts: dict[str, Any]) -> str:
    """The report page as a string (all scripts inline)."""
    rd = RunDir(run_dir)
    m = rd.read_manifest()
    cfg = m.get("config") or {}
    divs, calls = _chart_divs(charts)
    # The flow adds the backend's description; runs made without it still name the model.
    model = m.get("model") or {"name": (cfg.get("model") or {}).get("name")}
    meta = " · ".join(_e(x) for x in [
        f"arm {m.get('arm')}", f"status {m.get('status')}",
        f"ticks {m.get('ticks_done')}/{m.get('steps')}", f"model {model.get('name')}",
        f"source {m.get('source', 'steertown')}", f"config {m.get('config_hash')}",
        f"git {m.get('git_sha') or 'n/a'}", f"created {m.get('created')}"])
    beh = s_beh = summary["behaviour_vs_trait"]["hypotheses"]
    beh = [h for h in s_beh if h["present"]] or summary["behaviour_vs_trait"]["matrix"]
    sections = [
        f"<h1>steertown run {_e(summary['run_id'])}</h1><div class='meta'>{meta}</div>",
        "<h2>Highlights</h2>" + _highlights(summary),
        "<h2>Steering verification</h2>" + _verification(rd.path),
        "<h2>Charts</h2>" + divs,
        "<h2>Analysis tables</h2><div class='grid2'><div><h3>Actions</h3>"
        + _table(summary["action_distribution"])
        + "<h3>Success by action type</h3>" + _table(summary["success"]["by_action_type"])
        + "<h3>Failure reasons</h3>" + _table(summary["success"]["failure_reasons"], limit=15)
        + "<h3>Moves between locations</h3>" + _table(summary["temporal"]["moves"], limit=15)
        + "</div><div><h3>Trait statistics (coefficients and logged alphas)</h3>"
        + _table(summary["steering"]["traits"])
        + "<h3>Behaviour vs traits (across agents)</h3>"
        + _table(beh, ["action_type", "trait", "agents", "spearman", "pearson"])
        + "<h3>Tokens by action type</h3>" + _table(summary["tokens"]["by_action_type"])
        + "</div></div>"
        + "<details><summary>Agent activity</summary>"
        + _table(summary["agent_activity"]["per_agent"]) + "</details>"
        + "<details><summary>Steering profiles per agent</summary>"
        + _table(summary["steering"]["profiles"]) + "</details>"
        + "<details><summary>Success by trait band</summary>"
        + _table(summary["success"]["by_trait_band"]) + "</details>",
        "<h2>Timings</h2>" + _kv(summary["timings"]),
        "<h2>Configuration</h2><details open><summary>Resolved config</summary>"
        + _kv(dict(sorted(flatten(cfg).items()))) + "</details>"
        + ("<details><summary>Preflight</summary>" + _table(m["preflight"]) + "</details>"
           if m.get("preflight") else "")
        + "<details><summary>Model and versions</summary>"
        + _kv({**flatten(model, "model."), **flatten(m.get("versions") or {}, "versions.")})
        + "</details>",
        f"<p class='na'>Generated {_e(summary['generated'])} from {_e(rd.path)}. "
        "Full numbers: <a href='summary.json'>summary.json</a>.</p>",
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>steertown {_e(summary['run_id'])}</title><style>{CSS}</style>"
        f"<script>{vlc.javascript_bundle()}</script></head>"
        f"<body><main>{''.join(sections)}</main><script>{calls}</script></body></html>")


def write_report(run_dir: Path, reports_dir: Path, *, summary: dict | None = None) -> Path:
    """Analyse and chart the run, write `reports_dir/<run_id>/index.html`; return its path.

    Pass `summary` (from `analyze_run`) to skip re-running the analysis.
    """
    rd = RunDir(run_dir).require()
    if summary is None:
        summary = analyze_run(rd.path)
    run_id = summary.get("run_id") or rd.run_id
    if "/" in run_id or run_id in ("", ".", ".."):
        raise RunDirError(f"{rd.manifest_path}: run_id {run_id!r} cannot name a report folder")
    out = Path(reports_dir) / run_id
    charts = draw_charts(rd.path, out)
    atomic_write_json(out / "summary.json", summary)
    page = out / "index.html"
    atomic_write_bytes(page, render_html(rd.path, summary, charts).encode())
    return page
