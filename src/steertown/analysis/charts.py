"""Altair charts of one run, aggregated in DuckDB first, saved as PNG through vl-convert.

`draw_charts` returns the charts too, so the HTML report can embed the same specs
interactively.
"""

from __future__ import annotations

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


def _action_distribution(con) -> alt.Chart:
    df = con.execute("""SELECT action_type, count(*) AS count,
                               count(*) / sum(count(*)) OVER () AS share
                        FROM actions GROUP BY action_type""").df()
    base = alt.Chart(df).encode(
        y=alt.Y("action_type:N", sort="-x", title="action type"),
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
    df = con.execute(f"WITH m AS (SELECT agent_id, {avgs} FROM messages GROUP BY agent_id) "
                     f"{unions}").df()
    n_agents = df["agent_id"].nunique() if len(df) else 0
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


def _activity_over_time(con) -> alt.Chart:
    df = con.execute("""
        WITH t AS (SELECT tick FROM ticks UNION SELECT tick FROM actions
                   UNION SELECT tick FROM messages),
        per AS (SELECT t.tick,
                       (SELECT count(*) FROM actions a WHERE a.tick = t.tick) AS actions,
                       (SELECT count(*) FROM messages m WHERE m.tick = t.tick) AS messages,
                       (SELECT count(*) FROM actions a WHERE a.tick = t.tick AND a.success)
                           AS successes
                FROM t)
        UNPIVOT per ON actions, messages, successes INTO NAME series VALUE count
        ORDER BY tick""").df()
    return alt.Chart(df).mark_line(point=len(df) <= 150).encode(
        x=alt.X("tick:Q", title="tick", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("count:Q", title="rows per tick", axis=alt.Axis(tickMinStep=1)),
        color=alt.Color("series:N", title=None), tooltip=["tick", "series", "count"],
    ).properties(width=WIDTH + 200, height=260, title="Activity over time")


def _token_usage(con) -> alt.Chart:
    by_type = con.execute("""
        SELECT a.action_type, avg(m.tokens_in) AS tokens_in, avg(m.tokens_out) AS tokens_out
        FROM messages m JOIN actions a USING (tick, event_id, agent_id)
        WHERE m.kind = 'action' GROUP BY a.action_type
        UNION ALL
        SELECT upper(kind), avg(tokens_in), avg(tokens_out) FROM messages
        WHERE kind <> 'action' GROUP BY kind""").df()
    by_type = by_type.melt(id_vars="action_type", var_name="direction", value_name="mean_tokens")
    by_tick = con.execute("""SELECT tick, sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out
                             FROM messages GROUP BY tick ORDER BY tick""").df()
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
    ).properties(width=360, title="Tokens per tick")
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
    if pairs:
        return pairs
    # Other action vocabularies (legacy dumps): each common action vs its strongest trait.
    best: dict[str, tuple[float, str]] = {}
    for r in q.behaviour_correlations(con):
        if r["spearman"] is not None and abs(r["spearman"]) > best.get(r["action_type"], (-1, ""))[0]:
            best[r["action_type"]] = (abs(r["spearman"]), r["trait"])
    return [(a, t) for a, (_, t) in sorted(best.items())][:5]


def _behaviour_vs_trait(con) -> alt.Chart:
    pts = q.behaviour_points(con, _behaviour_pairs(con))
    rho = {(r["action_type"], r["trait"]): r["spearman"] for r in q.behaviour_correlations(con)}
    for p in pts:
        r = rho.get((p["action_type"], p["trait"]))
        p["panel"] = f"{p['action_type']} share vs {p['trait']}" + (
            f" (rho {r:+.2f})" if r is not None else " (rho n/a)")
    data = alt.Data(values=pts)
    base = alt.Chart(data).encode(
        x=alt.X("value:Q", title="trait coefficient", scale=alt.Scale(domain=[-1, 1])),
        y=alt.Y("share:Q", title="share of the agent's actions", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])))
    chart = (base.mark_circle(size=50, opacity=0.7).encode(
                tooltip=["agent_id:N", "value:Q", alt.Tooltip("share:Q", format=".1%")])
             + base.transform_regression("value", "share").mark_line(color="#e45756", clip=True))
    return chart.properties(width=220, height=180).facet(
        facet=alt.Facet("panel:N", title=None), columns=3,
    ).properties(title="Behaviour against traits (one point per agent)")


def build_charts(run_dir: Path) -> dict[str, alt.TopLevelMixin]:
    """The run's charts (not saved), keyed by file stem."""
    con = q.connect(RunDir(run_dir).require().path)
    try:
        return {
            "action_distribution": _action_distribution(con),
            "steering_heatmap": _steering_heatmap(con),
            "activity_over_time": _activity_over_time(con),
            "token_usage": _token_usage(con),
            "success_by_action": _success_by_action(con),
            "behaviour_vs_trait": _behaviour_vs_trait(con),
        }
    finally:
        con.close()


def save_png(chart: alt.TopLevelMixin, path: Path, scale: float = 1.5) -> Path:
    """Render `chart` to PNG offline (vl-convert) and write it atomically."""
    atomic_write_bytes(path, vlc.vegalite_to_png(chart.to_json(), scale=scale))
    return path


def draw_charts(run_dir: Path, out_dir: Path) -> dict[str, alt.TopLevelMixin]:
    """Draw the run's charts and save `<name>.png` for each in `out_dir`."""
    charts = build_charts(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, chart in charts.items():
        save_png(chart, out_dir / f"{name}.png")
    return charts
