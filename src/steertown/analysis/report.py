"""`write_report`: `reports/<run_id>/index.html`, one self-contained page per run.

The page is a Jinja2 template (`templates/report.html.j2`) filled with a list of
`Section`s. Each section comes from one builder in `SECTION_BUILDERS`; to add a part to
the report (society charts, a fingerprint heatmap, a diff), write a builder
`(ReportContext) -> Section | None` and add it to that tuple. A section carries trusted
HTML (render it with `render_fragment` from a template of your own under `templates/`, so
everything is escaped), Altair charts (embedded interactively and saved as
`<name>.png` beside the page) and image file names.

The Vega/Vega-Lite/vega-embed JavaScript comes from vl-convert's offline bundle and is
inlined once; every chart's spec (data included) is inlined beside it, so the page opens
without network. PNGs of the same charts show where scripts are off.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert as vlc
from markupsafe import Markup

from steertown.analysis.charts import build_charts, save_png
from steertown.analysis.diff import diff_section
from steertown.analysis.dose_chart import dose_response_charts
from steertown.analysis.report_sections import (
    ReportContext,
    Section,
    SectionBuilder,
    columns_of,
    render_fragment,
    template_env,
)
from steertown.analysis.society import build_society_charts
from steertown.analysis.summary import analyze_run
from steertown.config import flatten
from steertown.config_loading import steering_mode
from steertown.steering.modes import control_note
from steertown.storage.run_dir import RunDir, RunDirError, atomic_write_bytes, atomic_write_json

# --- the built-in sections, in page order ---

def _fmt_card(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if fmt == "%":
        return f"{v:.1%}"
    return format(v, fmt) if fmt else str(v)


def highlights_section(ctx: ReportContext) -> Section:
    """Headline counts and rates as cards."""
    s = ctx.summary
    c, tim, km = s["counts"], s["timings"], s["key_metrics"]
    items = [("agents", c["agents"], ","), ("ticks", c["ticks"], ","),
             ("actions", c["actions"], ","), ("messages", c["messages"], ","),
             ("success rate", km.get("success_rate"), "%"),
             ("tokens in / out", f"{km.get('tokens_in', 0):,.0f} / {km.get('tokens_out', 0):,.0f}", ""),
             ("mean tick seconds", tim.get("mean_tick_seconds"), ".3g"),
             ("model share of tick time", tim.get("model_seconds_share"), "%"),
             ("messages with non-zero steering", km.get("nonzero_steering_share"), "%"),
             ("agents steered", s["steering"]["presence"].get("agents_steered"), "")]
    means = ", ".join(f"{r['trait']} {r['logged_mean']:+.2f}" for r in s["steering"]["traits"]
                      if r["logged_mean"] is not None)
    return Section("Highlights", "highlights", render_fragment(
        "sections/highlights.html.j2",
        items=[(label, _fmt_card(v, fmt)) for label, v, fmt in items], means=means))


def verification_section(ctx: ReportContext) -> Section:
    """The verdict and the table of checks from `verification/report.json`."""
    path = ctx.run_dir / "verification" / "report.json"
    values: dict[str, Any] = {"report": None, "error": None}
    if path.is_file():
        try:
            rep = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            values["error"] = f"{path}: unreadable ({e})"
        else:
            verdict = rep.get("verdict")
            key = verdict.lower() if isinstance(verdict, str) else verdict
            # A required check that could not run leaves the run unverified, not skipped.
            checks = [{**c, "passed": {True: "PASS", False: "FAIL", None: (
                "NOT VERIFIED" if c.get("required") else "SKIP")}.get(
                c["passed"], c["passed"])} if "passed" in c else dict(c)
                for c in rep.get("checks", [])]
            preferred = ["name", "passed", "required", "figure", "detail"]
            extra = {k: v for k, v in rep.items() if k not in ("checks", "verdict")}
            values.update(
                report=rep, checks=checks,
                columns=preferred + [k for k in columns_of(checks) if k not in preferred],
                verdict_class={"pass": "pass", "passed": "pass", True: "pass", "fail": "fail",
                               "failed": "fail", False: "fail"}.get(key, "na"),
                extra=json.dumps(extra, indent=2, default=str) if extra else "")
    values["control_note"] = control_note(steering_mode(ctx.manifest.get("config") or {}))
    return Section("Steering verification", "verification",
                   render_fragment("sections/verification.html.j2", **values),
                   charts=dose_response_charts(ctx.run_dir))


def fingerprint_heatmap(rows: list[dict]) -> alt.Chart:
    """Trait x behaviour heatmap of Spearman rho (one cell per rate and trait)."""
    data = [{**r, "clear": r["ci_low"] is not None and (r["ci_low"] > 0 or r["ci_high"] < 0)}
            for r in rows if r["rho"] is not None]
    base = alt.Chart(alt.Data(values=data)).encode(
        x=alt.X("trait:N", sort=["E", "A", "C", "O", "N"], title="trait coefficient"),
        y=alt.Y("measure:N", title="per-agent rate"))
    cells = base.mark_rect().encode(
        color=alt.Color("rho:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True),
                        title="Spearman rho"),
        stroke=alt.condition("datum.clear", alt.value("black"), alt.value(None)),
        strokeWidth=alt.value(2),
        tooltip=["measure:N", "trait:N", alt.Tooltip("rho:Q", format="+.2f"),
                 alt.Tooltip("ci_low:Q", format="+.2f"), alt.Tooltip("ci_high:Q", format="+.2f"),
                 "agents:Q"])
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("rho:Q", format="+.2f"),
        color=alt.condition("abs(datum.rho) > 0.6", alt.value("white"), alt.value("black")))
    return (cells + text).properties(title="Behavioural fingerprint: rate vs trait",
                                     width=260, height=alt.Step(18))


def fingerprint_section(ctx: ReportContext) -> Section | None:
    """Trait x behaviour heatmap from the summary's fingerprint (analysis/fingerprint.py)."""
    rows = ctx.summary.get("fingerprint") or []
    if not any(r["rho"] is not None for r in rows):
        return None
    from steertown.analysis.fingerprint import agent_rates

    rates = agent_rates(ctx.run_dir)
    how = ("P(class | the class was offered), from the decisions table"
           if (rates.schema.metadata or {}).get(b"rates") == b"conditional"
           else "action shares: this run has no decisions table")
    return Section("Behavioural fingerprint", "fingerprint", render_fragment(
        "sections/fingerprint.html.j2", rows=rows, how=how, agents=rates.num_rows),
        charts={"fingerprint": fingerprint_heatmap(rows)})


def charts_section(ctx: ReportContext) -> Section:
    """The run's Altair charts (see `analysis/charts.py`)."""
    return Section("Charts", "charts", charts=build_charts(ctx.run_dir))


def society_section(ctx: ReportContext) -> Section | None:
    """Ties, news, outcomes by trait (see `analysis/society.py`); absent for older runs."""
    final = (ctx.summary.get("society") or {}).get("final")
    if not final:
        return None
    return Section("Society", "society", render_fragment(
        "sections/key_values.html.j2", values=final), charts=build_society_charts(ctx.run_dir))


def tables_section(ctx: ReportContext) -> Section:
    """The analysis tables of `summary.json`."""
    beh = ctx.summary["behaviour_vs_trait"]
    behaviour = [h for h in beh["hypotheses"] if h["present"]] or beh["matrix"]
    return Section("Analysis tables", "tables", render_fragment(
        "sections/tables.html.j2", s=ctx.summary, behaviour=behaviour))


def timings_section(ctx: ReportContext) -> Section:
    """Where the run's time went."""
    return Section("Timings", "timings", render_fragment(
        "sections/key_values.html.j2", values=ctx.summary["timings"]))


def configuration_section(ctx: ReportContext) -> Section:
    """Resolved config, command-line overrides, preflight, model and versions."""
    m = ctx.manifest
    cfg = m.get("config") or {}
    model = m.get("model") or {"name": (cfg.get("model") or {}).get("name")}
    return Section("Configuration", "configuration", render_fragment(
        "sections/configuration.html.j2", config=dict(sorted(flatten(cfg).items())),
        overrides=m.get("overrides") or [], preflight=m.get("preflight"),
        versions={**flatten(model, "model."), **flatten(m.get("versions") or {}, "versions.")}))


# Add a section here (in page order). A builder returning None leaves its section out.
SECTION_BUILDERS: tuple[SectionBuilder, ...] = (
    highlights_section,
    verification_section,
    fingerprint_section,
    charts_section,
    society_section,
    tables_section,
    diff_section,
    timings_section,
    configuration_section,
)


def _meta(m: dict) -> list[str]:
    cfg = m.get("config") or {}
    # The flow adds the backend's description; runs made without it still name the model.
    model = m.get("model") or {"name": (cfg.get("model") or {}).get("name")}
    return [f"arm {m.get('arm')}", f"status {m.get('status')}",
            f"ticks {m.get('ticks_done')}/{m.get('steps')}", f"model {model.get('name')}",
            f"source {m.get('source', 'steertown')}", f"config {m.get('config_hash')}",
            f"git {m.get('git_sha') or 'n/a'}", f"created {m.get('created')}"]


def render_page(ctx: ReportContext, sections: list[Section]) -> str:
    """The whole page as a string (all scripts and styles inline)."""
    env = template_env()
    css = env.loader.get_source(env, "report.css")[0]
    return env.get_template("report.html.j2").render(
        run_id=ctx.summary.get("run_id") or ctx.run_dir.name, meta=_meta(ctx.manifest),
        sections=sections, css=Markup(css), vega_bundle=Markup(vlc.javascript_bundle()),
        generated=ctx.summary.get("generated") or datetime.now(UTC).isoformat(timespec="seconds"),
        run_dir=str(ctx.run_dir))


def write_report(run_dir: Path, reports_dir: Path, *, summary: dict | None = None,
                 builders: tuple[SectionBuilder, ...] = SECTION_BUILDERS) -> Path:
    """Analyse and chart the run, write `reports_dir/<run_id>/index.html`; return its path.

    Pass `summary` (from `analyze_run`) to skip re-running the analysis. Every chart of
    every section is also saved as `<name>.png` beside the page.
    """
    rd = RunDir(run_dir).require()
    if summary is None:
        summary = analyze_run(rd.path)
    run_id = summary.get("run_id") or rd.run_id
    if "/" in run_id or run_id in ("", ".", ".."):
        raise RunDirError(f"{rd.manifest_path}: run_id {run_id!r} cannot name a report folder")
    out = Path(reports_dir) / run_id
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(run_dir=rd.path, out_dir=out, manifest=rd.read_manifest(), summary=summary)
    sections = [s for s in (build(ctx) for build in builders) if s is not None]
    for section in sections:
        for name, chart in section.charts.items():
            save_png(chart, out / f"{name}.png")
    atomic_write_json(out / "summary.json", summary)
    page = out / "index.html"
    atomic_write_bytes(page, render_page(ctx, sections).encode())
    return page
