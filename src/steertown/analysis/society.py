"""The town as a society: DuckDB queries over interactions, agent_state and society, and
the charts drawn from them (ties network at the end, news spread, outcomes by trait).

Tie weights at the end are rebuilt from the interactions with the same gains the world
applied (`world.social.TIE_GAIN`, capped at 1), so no per-tick ties table is needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import altair as alt
import duckdb

from steertown.analysis import queries as q
from steertown.analysis.charts import MAX_POINTS, WIDTH, binned_means, save_pngs
from steertown.config import TRAITS
from steertown.storage.run_dir import RunDir
from steertown.world.social import FRIEND_THRESHOLD, TIE_GAIN

SOCIETY_TABLES = ("interactions", "agent_state", "society", "memories")
OUTCOMES = ("coins", "friends", "goal_progress")
CHART_NAMES = ("ties_network", "news_spread", "society_over_time", "outcomes_by_trait")
MAX_EDGES = 2000  # drawn edges (strongest first): keeps the chart under Altair's row limit


def connect(run_dir: Path | str) -> duckdb.DuckDBPyConnection:
    """The run's DuckDB connection (queries.connect) plus views of the society tables."""
    con = RunDir(run_dir).connect(SOCIETY_TABLES, con=q.connect(run_dir))
    gains = ", ".join(f"('{k}', {v})" for k, v in TIE_GAIN.items())
    con.execute(f"CREATE VIEW tie_gain AS SELECT type, gain::DOUBLE AS gain FROM (VALUES {gains}) t(type, gain)")
    return con


def final_ties(con) -> list[dict]:
    """Tie weight per pair at the end of the run, strongest first."""
    return q.rows(con, f"""
        SELECT least(actor, target) AS a, greatest(actor, target) AS b,
               least(1.0, sum(gain)) AS weight, count(*) AS interactions,
               least(1.0, sum(gain)) >= {FRIEND_THRESHOLD} AS friends
        FROM interactions JOIN tie_gain USING (type)
        WHERE target IS NOT NULL AND target <> '' AND actor <> target
        GROUP BY 1, 2 ORDER BY weight DESC, a, b""")


def society_curve(con) -> list[dict]:
    """The society table, tick by tick."""
    return q.rows(con, "SELECT * EXCLUDE (run_id) FROM society ORDER BY tick")


def agent_outcomes(con) -> list[dict]:
    """Each agent's state at the last tick, with its traits and what it did and received."""
    traits = ", ".join(f'g."{t}"' for t in TRAITS)
    return q.rows(con, f"""
        WITH last AS (SELECT * FROM agent_state WHERE tick = (SELECT max(tick) FROM agent_state)),
             given AS (SELECT actor AS agent_id, count(*) FILTER (type = 'HELP') AS helps_given,
                              count(*) FILTER (type = 'INVITE') AS invites_sent,
                              count(*) FILTER (type = 'TALK') AS talks
                       FROM interactions GROUP BY 1),
             got AS (SELECT target AS agent_id, count(*) FILTER (type = 'HELP') AS helps_received
                     FROM interactions GROUP BY 1)
        SELECT g.agent_id, g.name, {traits}, s.goal_kind, s.goal_progress, s.goal_done_tick,
               s.coins, s.energy, s.earned, s.friends, s.places_visited, s.gathered,
               s.knows_news, s.news_from, s.news_tick,
               coalesce(helps_given, 0) AS helps_given, coalesce(invites_sent, 0) AS invites_sent,
               coalesce(talks, 0) AS talks, coalesce(helps_received, 0) AS helps_received
        FROM agents g JOIN last s USING (agent_id) LEFT JOIN given USING (agent_id)
        LEFT JOIN got USING (agent_id) ORDER BY g.agent_id""")


def outcome_correlations(con) -> list[dict]:
    """Spearman correlation of each trait with each end-of-run outcome, across agents."""
    ranks = ", ".join([f'rank() OVER (ORDER BY g."{t}") AS r_{t}' for t in TRAITS]
                      + [f"rank() OVER (ORDER BY s.{o}) AS r_{o}" for o in OUTCOMES])
    pairs = " UNION ALL ".join(
        f"SELECT '{t}' AS trait, '{o}' AS outcome, count(*) AS agents, "
        f"corr(r_{t}, r_{o}) AS spearman FROM r" for t in TRAITS for o in OUTCOMES)
    return q.rows(con, f"""
        WITH last AS (SELECT * FROM agent_state WHERE tick = (SELECT max(tick) FROM agent_state)),
             r AS (SELECT {ranks} FROM agents g JOIN last s USING (agent_id))
        {pairs}""")


def society_summary(con) -> dict[str, Any]:
    """End-of-run society figures for summary.json and MLflow (empty without the tables)."""
    last = q.one(con, "SELECT * EXCLUDE (run_id) FROM society ORDER BY tick DESC LIMIT 1")
    if not last:
        return {}
    inter = {r["type"]: r["n"] for r in q.rows(
        con, "SELECT type, count(*) AS n FROM interactions GROUP BY type")}
    replies = q.one(con, "SELECT count(*) AS n FROM interactions WHERE detail = 'reply'")["n"]
    news = q.one(con, """SELECT min(tick) FILTER (news_reach >= 0.5) AS half_reach_tick
                         FROM society""")
    return {"final": last, "interactions": inter, "replies": replies,
            "news_half_reach_tick": news.get("half_reach_tick"),
            "goals_met_share": last["goals_met"] / last["agents"] if last["agents"] else None,
            "outcomes_by_trait": outcome_correlations(con)}


def society_metrics(s: dict[str, Any]) -> dict[str, float]:
    """Flat numeric metrics of `society_summary` (for MLflow and key_metrics)."""
    if not s:
        return {}
    f = s["final"]
    m = {f"society_{k}": f[k] for k in ("density", "clustering", "degree_centralisation",
                                        "gini_coins", "news_reach", "goals_met", "mean_coins")}
    m["society_goals_met_share"] = s["goals_met_share"]
    m["society_replies"] = s["replies"]
    for k, v in s["interactions"].items():
        m[f"society_{k.lower()}_count"] = v
    return {k: float(v) for k, v in m.items()
            if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v))}


# --- charts -----------------------------------------------------------------------------
def _ties_network(con) -> alt.Chart:
    """Agents on a circle (households side by side), edges = ties at the end, width and colour by weight."""
    agents = [r["agent_id"] for r in q.rows(con, "SELECT agent_id FROM agents ORDER BY home, agent_id")]
    n = max(1, len(agents))
    pos = {a: (math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n))
           for i, a in enumerate(agents)}
    names = {r["agent_id"]: r["name"] for r in q.rows(con, "SELECT agent_id, name FROM agents")}
    edges = [{"x": pos[e["a"]][0], "y": pos[e["a"]][1], "x2": pos[e["b"]][0],
              "y2": pos[e["b"]][1], "weight": e["weight"],
              "pair": f"{names[e['a']]} - {names[e['b']]}"}
             for e in final_ties(con)[:MAX_EDGES] if e["a"] in pos and e["b"] in pos]
    degree: dict[str, int] = {}
    for e in final_ties(con):
        for a in (e["a"], e["b"]):
            degree[a] = degree.get(a, 0) + 1
    nodes = [{"x": x, "y": y, "name": names[a], "ties": degree.get(a, 0)}
             for a, (x, y) in pos.items()]
    axis = alt.Axis(labels=False, ticks=False, grid=False, domain=False, title=None)
    lines = alt.Chart(alt.Data(values=edges)).mark_rule(opacity=0.6).encode(
        x=alt.X("x:Q", axis=axis), y=alt.Y("y:Q", axis=axis), x2="x2:Q", y2="y2:Q",
        strokeWidth=alt.StrokeWidth("weight:Q", scale=alt.Scale(domain=[0, 1], range=[0.5, 5]),
                                    title="tie"),
        color=alt.Color("weight:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="tie"),
        tooltip=["pair:N", alt.Tooltip("weight:Q", format=".2f")])
    dots = alt.Chart(alt.Data(values=nodes)).mark_circle(color="#cf222e").encode(
        x="x:Q", y="y:Q", size=alt.Size("ties:Q", title="ties"), tooltip=["name:N", "ties:Q"])
    title = f"Ties at the end ({len(edges)} pairs; friends = tie >= {FRIEND_THRESHOLD})"
    return (lines + dots).properties(width=WIDTH, height=WIDTH, title=title)


def _news_spread(con) -> alt.Chart:
    df = con.execute("""SELECT tick, news_reach, count_if(knows_news) AS knowers
                        FROM society JOIN agent_state USING (tick)
                        GROUP BY tick, news_reach ORDER BY tick""").df()
    return alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("tick:Q", title="tick"),
        y=alt.Y("news_reach:Q", title="share who know the news", scale=alt.Scale(domain=[0, 1])),
        tooltip=["tick", "knowers", alt.Tooltip("news_reach:Q", format=".1%")],
    ).properties(width=WIDTH, title="News spread through conversations")


def _society_over_time(con) -> alt.Chart:
    df = con.execute("""UNPIVOT (SELECT tick, density, clustering, degree_centralisation,
                                        gini_coins, goals_met / agents AS goals_met_share
                                 FROM society)
                        ON COLUMNS(* EXCLUDE (tick)) INTO NAME metric VALUE value""").df()
    return alt.Chart(df).mark_line().encode(
        x=alt.X("tick:Q", title="tick"), y=alt.Y("value:Q", title="value"),
        color=alt.Color("metric:N", title="metric"),
        tooltip=["tick", "metric", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=WIDTH, title="Society over time")


def _outcomes_by_trait(con) -> alt.Chart:
    rows = agent_outcomes(con)
    data = [{"trait": t, "coefficient": r[t], "outcome": o, "value": r[o], "agent": r["name"]}
            for r in rows for t in TRAITS for o in OUTCOMES if r[o] is not None]
    dots = alt.Chart(alt.Data(values=data)).mark_circle(opacity=0.6).encode(
        tooltip=["agent:N", "trait:N", alt.Tooltip("coefficient:Q", format="+.2f"),
                 "outcome:N", "value:Q"])
    if len(data) > MAX_POINTS:  # large towns: mean per coefficient bin, sized by its agents
        data = binned_means(data, ("trait", "outcome"), "coefficient", "value")
        dots = alt.Chart(alt.Data(values=data)).mark_circle(opacity=0.6).encode(
            size=alt.Size("agents:Q", title="agents"),
            tooltip=["trait:N", "outcome:N", "agents:Q",
                     alt.Tooltip("coefficient:Q", format="+.2f"), "value:Q"])
    return dots.encode(
        x=alt.X("coefficient:Q", title="trait coefficient"),
        y=alt.Y("value:Q", title=None),
    ).properties(width=110, height=110).facet(
        column=alt.Column("trait:N", sort=list(TRAITS)),
        row=alt.Row("outcome:N", sort=list(OUTCOMES)),
    ).resolve_scale(y="independent").properties(title="End-of-run outcomes by trait")


_CHARTS = {"ties_network": (_ties_network, "interactions"),
           "news_spread": (_news_spread, "society"),
           "society_over_time": (_society_over_time, "society"),
           "outcomes_by_trait": (_outcomes_by_trait, "agent_state")}


def build_society_charts(run_dir: Path) -> dict[str, alt.TopLevelMixin]:
    """The society charts of a run; runs without the society tables get none."""
    con = connect(RunDir(run_dir).require().path)
    try:
        return {name: build(con) for name, (build, table) in _CHARTS.items()
                if con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0}
    finally:
        con.close()


def draw_society_charts(run_dir: Path, out_dir: Path) -> dict[str, alt.TopLevelMixin]:
    """Draw the society charts and save `<name>.png` for each in `out_dir`."""
    return save_pngs(build_society_charts(run_dir), out_dir)
