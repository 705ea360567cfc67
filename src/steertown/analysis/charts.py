"""Altair charts of one run, aggregated in DuckDB first, saved as PNG through vl-convert.

`draw_charts` returns the charts too, so the HTML report can embed the same specs
interactively.
"""

from __future__ import annotations

import math
from pathlib import Path

import altair as alt
import vl_convert as vlc

from steertown.analysis import queries as q
from steertown.config import TRAITS
from steertown.storage.run_dir import RunDir, atomic_write_bytes

CHART_NAMES: tuple[str, ...] = (
    "action_distribution", "steering_heatmap", "activity_over_time", "token_usage",
    "success_by_action", "behaviour_vs_trait",
)
WIDTH = 520
# Altair refuses charts of more than 5,000 rows (and big inline data makes slow pages):
# past these sizes every chart draws aggregates (bins of agents, ticks or trait values).
MAX_AGENT_ROWS = 200  # agents drawn one row each in the heatmap
MAX_TICK_POINTS = 400  # ticks drawn one point each in line charts
MAX_POINTS = 2000  # agents drawn one point each in the behaviour scatter
TRAIT_BINS = 20  # bins of a trait coefficient in [-1, 1]


def _action_distribution(con) -> alt.Chart:
    df = con.execute("""SELECT action_type, count(*) AS count,
                               count(*) / sum(count(*)) OVER () AS share
                        FROM actions GROUP BY action_type ORDER BY count DESC""").df()
    # An explicit order: sort="-x" on both layers makes Vega warn about conflicting sorts.
    base = alt.Chart(df).encode(
        y=alt.Y("action_type:N", sort=list(df["action_type"]), title="action type"),
        x=alt.X("count:Q", title="actions", axis=alt.Axis(tickMinStep=1, format="d")),
        tooltip=["action_type", "count", alt.Tooltip("share:Q", format=".1%")])
    text = base.mark_text(align="left", dx=3).encode(text=alt.Text("share:Q", format=".1%"))
    return (base.mark_bar() + text).properties(width=WIDTH, title="Action type distribution")


def _steering_heatmap(con) -> alt.Chart:
    # Mean alpha actually logged per agent; agents without messages show their assigned value.
    unions = " UNION ALL ".join(
        f"""SELECT g.agent_id, '{t}' AS trait, g."{t}" AS assigned,
                   coalesce(m.a_{t}, g."{t}") AS alpha
            FROM agents g LEFT JOIN m USING (agent_id)""" for t in TRAITS)
    avgs = ", ".join(f"avg(alpha_{t}) AS a_{t}" for t in TRAITS)
    per_agent = (f"WITH m AS (SELECT agent_id, {avgs} FROM messages GROUP BY agent_id) "
                 f"{unions}")
    n_agents = con.execute("SELECT count(*) FROM agents").fetchone()[0]
    if n_agents > MAX_AGENT_ROWS:
        return _steering_histogram(con, per_agent, n_agents)
    df = con.execute(per_agent).df()
    lim = max(1.0, float(df["alpha"].abs().max())) if len(df) else 1.0
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("trait:N", sort=list(TRAITS), title="trait", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("agent_id:N", title="agent"),
        color=alt.Color("alpha:Q", title="mean alpha",
                        scale=alt.Scale(scheme="redblue", domain=[-lim, lim], reverse=True)),
        tooltip=["agent_id", "trait", alt.Tooltip("alpha:Q", format="+.3f"),
                 alt.Tooltip("assigned:Q", format="+.3f")],
    ).properties(width=60 * len(TRAITS), height=max(120, min(14 * n_agents, 1400)),
                 title="Steering profiles (mean logged alpha per agent and trait)")


def _steering_histogram(con, per_agent: str, n_agents: int) -> alt.Chart:
    """Large towns: how many agents have each mean alpha, per trait (binned in DuckDB)."""
    lim = max(1.0, con.execute(f"SELECT max(abs(alpha)) FROM ({per_agent})").fetchone()[0] or 1)
    step = 2 * lim / TRAIT_BINS
    df = con.execute(f"""
        SELECT trait, least(floor((alpha + {lim}) / {step}), {TRAIT_BINS - 1}) * {step} - {lim}
                      AS lo, count(*) AS agents
        FROM ({per_agent}) GROUP BY ALL""").df()
    df["hi"] = df["lo"] + step
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("trait:N", sort=list(TRAITS), title="trait", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("lo:Q", title="mean alpha", scale=alt.Scale(domain=[-lim, lim])),
        y2="hi:Q",
        color=alt.Color("agents:Q", title="agents", scale=alt.Scale(scheme="blues")),
        tooltip=["trait", alt.Tooltip("lo:Q", format="+.2f", title="from"),
                 alt.Tooltip("hi:Q", format="+.2f", title="to"), "agents"],
    ).properties(width=60 * len(TRAITS), height=320,
                 title=f"Steering profiles of {n_agents:,} agents (agents per mean-alpha bin)")


def _tick_width(con, points: int) -> int:
    """Ticks per bin so a per-tick series has at most `points` points."""
    n_ticks = con.execute("SELECT max(tick) FROM ticks").fetchone()[0] or 0
    n_ticks = max(n_ticks, con.execute("SELECT count(DISTINCT tick) FROM actions").fetchone()[0])
    return max(1, math.ceil(n_ticks / points))


def _activity_over_time(con) -> alt.Chart:
    # Two panels: what agents did per tick (stacked by type), then the row counts as lines
    # with distinct dashes, since actions, messages and successes often coincide exactly.
    # Long runs: bins of `width` ticks (at most ~60 bars); missing types count as 0.
    width = _tick_width(con, 60)
    line_width = _tick_width(con, MAX_TICK_POINTS)
    by_type = con.execute(f"""
        WITH a AS (SELECT (tick - 1) // {width} * {width} + 1 AS tick, tick AS t, action_type
                   FROM actions),
        bins AS (SELECT tick, count(DISTINCT t) AS ticks FROM a GROUP BY tick),
        grid AS (SELECT bins.tick, bins.ticks, k.action_type FROM bins CROSS JOIN
                 (SELECT DISTINCT action_type FROM a) k)
        SELECT grid.tick, grid.action_type, count(a.t) / any_value(grid.ticks) AS n
        FROM grid LEFT JOIN a USING (tick, action_type)
        GROUP BY grid.tick, grid.action_type ORDER BY grid.tick""").df()
    totals = con.execute(f"""
        WITH t AS (SELECT tick FROM ticks UNION SELECT tick FROM actions
                   UNION SELECT tick FROM messages),
        a AS (SELECT tick, count(*) AS actions, count(*) FILTER (WHERE success) AS successes
              FROM actions GROUP BY tick),
        m AS (SELECT tick, count(*) AS messages FROM messages GROUP BY tick),
        per AS (SELECT (t.tick - 1) // {line_width} * {line_width} + 1 AS tick,
                       avg(coalesce(a.actions, 0)) AS actions,
                       avg(coalesce(m.messages, 0)) AS messages,
                       avg(coalesce(a.successes, 0)) AS successes
                FROM t LEFT JOIN a USING (tick) LEFT JOIN m USING (tick) GROUP BY 1)
        UNPIVOT per ON actions, messages, successes INTO NAME series VALUE count
        ORDER BY tick""").df()
    x = alt.X("tick:Q", title="tick", axis=alt.Axis(tickMinStep=1, format="d"))
    title = "Actions per tick by type" + (f" (mean over {width}-tick bins)" if width > 1 else "")
    area = alt.Chart(by_type).mark_bar().encode(
        x=alt.X("tick:O", title="tick" if width == 1 else f"first tick of the {width}-tick bin",
                axis=alt.Axis(labelAngle=0, labelOverlap="greedy")),
        y=alt.Y("n:Q", stack="zero", title="actions per tick"),
        color=alt.Color("action_type:N", title="action type"),
        tooltip=["tick", "action_type", alt.Tooltip("n:Q", format=".2f")],
    ).properties(width=WIDTH + 200, height=200, title=title)
    lines = alt.Chart(totals).mark_line(strokeWidth=2).encode(
        x=x, y=alt.Y("count:Q", title="rows per tick", axis=alt.Axis(tickMinStep=1)),
        color=alt.Color("series:N", title="series"),
        strokeDash=alt.StrokeDash("series:N", title="series"),
        tooltip=["tick", "series", "count"],
    ).properties(width=WIDTH + 200, height=180, title="Actions, messages and successes per tick"
                 + (f" (mean over {line_width}-tick bins)" if line_width > 1 else ""))
    return alt.vconcat(area, lines).resolve_scale(color="independent",
                                                  strokeDash="independent")


def _token_usage(con) -> alt.Chart:
    by_type = con.execute("""
        SELECT a.action_type, avg(m.tokens_in) AS tokens_in, avg(m.tokens_out) AS tokens_out
        FROM messages m JOIN actions a USING (tick, event_id, agent_id)
        WHERE m.kind = 'action' GROUP BY a.action_type
        UNION ALL
        SELECT upper(kind), avg(tokens_in), avg(tokens_out) FROM messages
        WHERE kind <> 'action' GROUP BY kind""").df()
    by_type = by_type.melt(id_vars="action_type", var_name="direction", value_name="mean_tokens")
    w = _tick_width(con, MAX_TICK_POINTS)
    by_tick = con.execute(f"""
        SELECT (tick - 1) // {w} * {w} + 1 AS tick, sum(tokens_in) / count(DISTINCT tick)
               AS tokens_in, sum(tokens_out) / count(DISTINCT tick) AS tokens_out
        FROM messages GROUP BY 1 ORDER BY 1""").df()
    by_tick = by_tick.melt(id_vars="tick", var_name="direction", value_name="tokens")
    bars = alt.Chart(by_type).mark_bar().encode(
        y=alt.Y("action_type:N", title="generation"),
        x=alt.X("mean_tokens:Q", title="mean tokens per generation"),
        yOffset="direction:N", color=alt.Color("direction:N", title=None),
        tooltip=["action_type", "direction", alt.Tooltip("mean_tokens:Q", format=".1f")],
    ).properties(width=300, title="Tokens per generation by action type")
    line = alt.Chart(by_tick).mark_line().encode(
        x=alt.X("tick:Q", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("tokens:Q", title="tokens per tick"),
        color=alt.Color("direction:N", title=None), tooltip=["tick", "direction", "tokens"],
    ).properties(width=360, title="Tokens per tick" + (f" (mean over {w}-tick bins)" if w > 1
                                                       else ""))
    return alt.hconcat(bars, line)


def _success_by_action(con) -> alt.Chart:
    by_type = con.execute("""
        SELECT action_type, count(*) AS n, avg(success::INT) AS rate
        FROM actions GROUP BY action_type""").df()
    by_band = con.execute(f"""
        WITH tl AS ({q._agent_traits_long()})
        SELECT tl.trait, tl.band, count(*) AS n, avg(a.success::INT) AS rate
        FROM tl JOIN actions a USING (agent_id) GROUP BY ALL""").df()
    left = alt.Chart(by_type).mark_bar().encode(
        y=alt.Y("action_type:N", sort="-x", title="action type"),
        x=alt.X("rate:Q", title="success rate", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        tooltip=["action_type", "n", alt.Tooltip("rate:Q", format=".1%")],
    ).properties(width=280, title="Success rate by action type")
    right = alt.Chart(by_band).mark_bar().encode(
        x=alt.X("trait:N", sort=list(TRAITS), title="trait", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("band:N", sort=["low", "mid", "high"]),
        y=alt.Y("rate:Q", title="success rate", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        color=alt.Color("band:N", sort=["low", "mid", "high"],
                        scale=alt.Scale(domain=["low", "mid", "high"],
                                        range=["#4c78a8", "#bab0ac", "#e45756"]),
                        title=f"band (<{q.BAND_LOW}, mid, >{q.BAND_HIGH})"),
        tooltip=["trait", "band", "n", alt.Tooltip("rate:Q", format=".1%")],
    ).properties(width=300, title="Success rate by trait band")
    return alt.hconcat(left, right)


def _behaviour_pairs(con) -> list[tuple[str, str]]:
    present = {r[0] for r in con.execute("SELECT DISTINCT action_type FROM actions").fetchall()}
    pairs = [(a, t) for a, t in q.BEHAVIOUR_PAIRS if a in present]
    # Actions outside the hypotheses (e.g. a legacy dump's RESEARCH): each vs its strongest trait.
    known = {a for a, _ in q.BEHAVIOUR_PAIRS}
    best: dict[str, tuple[float, str]] = {}
    for r in q.behaviour_correlations(con):
        a, rho = r["action_type"], r["spearman"]
        if a not in known and rho is not None and abs(rho) > best.get(a, (-1.0, ""))[0]:
            best[a] = (abs(rho), r["trait"])
    pairs += [(a, t) for a, (_, t) in sorted(best.items())]
    return pairs[:6]


def _behaviour_vs_trait(con) -> alt.Chart:
    pts = q.behaviour_points(con, _behaviour_pairs(con))
    if not pts:
        return _placeholder("behaviour vs trait", "no action/trait pair to show")
    rho = {(r["action_type"], r["trait"]): r["spearman"] for r in q.behaviour_correlations(con)}
    for p in pts:
        r = rho.get((p["action_type"], p["trait"]))
        p["panel"] = f"{p['action_type']} share vs {p['trait']}" + (
            f" (rho {r:+.2f})" if r is not None else " (rho n/a)")
    binned = len(pts) > MAX_POINTS
    if binned:  # one point per trait bin: mean share of its agents, sized by their number
        pts = _bin_points(pts)
    data = alt.Data(values=pts)
    base = alt.Chart(data).encode(
        x=alt.X("value:Q", title="trait coefficient", scale=alt.Scale(domain=[-1, 1])),
        y=alt.Y("share:Q", title="share of the agent's actions", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])))
    dots = (base.mark_circle(opacity=0.7).encode(
                size=alt.Size("agents:Q", title="agents"),
                tooltip=["agents:Q", "value:Q", alt.Tooltip("share:Q", format=".1%")])
            if binned else base.mark_circle(size=50, opacity=0.7).encode(
                tooltip=["agent_id:N", "value:Q", alt.Tooltip("share:Q", format=".1%")]))
    chart = dots + base.transform_regression("value", "share").mark_line(color="#e45756",
                                                                         clip=True)
    what = ("mean share per trait bin, sized by its agents" if binned
            else "one point per agent")
    return chart.properties(width=220, height=180).facet(
        facet=alt.Facet("panel:N", title=None), columns=3,
    ).properties(title=f"Behaviour against traits ({what})")


def _bin_points(pts: list[dict]) -> list[dict]:
    """Agents' (value, share) points averaged within TRAIT_BINS bins of the trait value."""
    return binned_means(pts, ("panel",), "value", "share")


def binned_means(points: list[dict], by: tuple[str, ...], x: str, y: str,
                 bins: int = TRAIT_BINS, lo: float = -1.0, hi: float = 1.0) -> list[dict]:
    """Points averaged within `bins` equal bins of `x` over [lo, hi], per group `by`:
    rows {by..., x: mean x, y: mean y, "agents": points in the bin}. For scatter plots
    of many agents (draw the result with size="agents:Q")."""
    acc: dict[tuple, list[float]] = {}
    for p in points:
        b = min(max(int((p[x] - lo) / (hi - lo) * bins), 0), bins - 1)
        a = acc.setdefault((*(p[k] for k in by), b), [0.0, 0.0, 0])
        a[0] += p[x]
        a[1] += p[y]
        a[2] += 1
    return [{**dict(zip(by, key[:-1], strict=True)), x: sx / n, y: sy / n, "agents": n}
            for key, (sx, sy, n) in sorted(acc.items())]


def _placeholder(title: str, why: str) -> alt.Chart:
    # vl-convert cannot render a chart without data ("SVG has an invalid size").
    return alt.Chart(alt.Data(values=[{"msg": why}])).mark_text(size=14, color="#57606a").encode(
        text="msg:N").properties(width=WIDTH, height=60, title=title)


# chart -> (builder, table it needs rows in)
_CHARTS = {
    "action_distribution": (_action_distribution, "actions"),
    "steering_heatmap": (_steering_heatmap, "agents"),
    "activity_over_time": (_activity_over_time, "actions"),
    "token_usage": (_token_usage, "messages"),
    "success_by_action": (_success_by_action, "actions"),
    "behaviour_vs_trait": (_behaviour_vs_trait, "actions"),
}


def build_charts(run_dir: Path) -> dict[str, alt.TopLevelMixin]:
    """The run's charts (not saved), keyed by file stem; placeholders where data is missing."""
    con = q.connect(RunDir(run_dir).require().path)
    try:
        out = {}
        for name, (build, table) in _CHARTS.items():
            if con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0:
                out[name] = _placeholder(name.replace("_", " "), f"no {table} rows yet")
            else:
                out[name] = build(con)
        return out
    finally:
        con.close()


def save_png(chart: alt.TopLevelMixin, path: Path, scale: float = 1.5) -> Path:
    """Render `chart` to PNG offline (vl-convert) and write it atomically."""
    atomic_write_bytes(path, vlc.vegalite_to_png(chart.to_json(), scale=scale))
    return path


def save_pngs(charts: dict[str, alt.TopLevelMixin], out_dir: Path) -> dict[str, alt.TopLevelMixin]:
    """Save `<name>.png` for each chart in `out_dir`; returns the charts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, chart in charts.items():
        save_png(chart, out_dir / f"{name}.png")
    return charts


def draw_charts(run_dir: Path, out_dir: Path) -> dict[str, alt.TopLevelMixin]:
    """Draw the run's charts and save `<name>.png` for each in `out_dir`."""
    return save_pngs(build_charts(run_dir), out_dir)
