"""Diffs of two runs (a fork and its parent, two seeds, two modes): where and how they part.

- `first_divergence`: the first tick at which any per-tick table differs (run_id and
  wall-clock columns left out), scanning ticks in order.
- per tick, the share of differing actions: each agent's k-th action of the tick is
  paired with its k-th action in the other run; a pair differs when its type, target,
  destination or success differ, or one side has no such action.
- outcomes side by side: the last tick's society metrics (world.metrics), agents' final
  states (means over agents), action shares and interaction counts, over the whole run
  and from the first divergent tick on.

`diff_runs` returns plain data (JSON); `diff_chart` draws it; `write_diff` stores it in
both runs (`analysis/diffs/<other run>.json`), where `diff_section` shows it in each
run's report. A fork's report diffs against its parent unasked.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import altair as alt
import duckdb
import pyarrow.parquet as pq

from steertown.storage import schema
from steertown.storage.run_dir import RunDir, atomic_write_json
from steertown.storage.run_tables import new_connection

ACTION_KEY = ("action_type", "target", "location_after", "success")
SOCIETY_METRICS = ("tie_edges", "friend_edges", "density", "clustering", "degree_centralisation",
                   "gini_coins", "mean_coins", "mean_energy", "goals_met", "news_reach")
AGENT_OUTCOMES = ("coins", "energy", "earned", "friends", "places_visited", "goal_progress")


def _tick_rows(run: RunDir, table: str, tick: int) -> list[dict] | None:
    path = run.tick_file(table, tick)
    if not path.is_file():
        return None
    t = pq.read_table(path)
    keep = [c for c in t.column_names if c != "run_id" and not c.endswith("_seconds")]
    return [{k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in t.select(keep).to_pylist()]


def first_divergence(run_a: str | Path, run_b: str | Path) -> tuple[int, str] | None:
    """(tick, table) of the first difference between two runs' per-tick tables, or None.

    A tick present in one run only is a difference (table "ticks"): runs of different
    lengths diverge where the shorter one ends.
    """
    a, b = RunDir(run_a).require(), RunDir(run_b).require()
    ticks_a, ticks_b = set(a.completed_ticks()), set(b.completed_ticks())
    for tick in sorted(ticks_a | ticks_b):
        if tick not in ticks_a or tick not in ticks_b:
            return tick, "ticks"
        for table in schema.TABLES:
            if _tick_rows(a, table, tick) != _tick_rows(b, table, tick):
                return tick, table
    return None


def action_differences(con: duckdb.DuckDBPyConnection, a: RunDir, b: RunDir) -> list[dict]:
    """Per tick: actions in each run, differing action pairs and their share."""
    if not a.files("actions") or not b.files("actions"):
        return []
    cols = ", ".join(ACTION_KEY)
    ranked = ("SELECT tick, agent_id, {cols}, row_number() OVER (PARTITION BY tick, agent_id "
              "ORDER BY event_id) AS k FROM {src}")
    same = " AND ".join(f"x.{c} IS NOT DISTINCT FROM y.{c}" for c in ACTION_KEY)
    return [dict(zip(("tick", "actions_a", "actions_b", "differing", "share_differing"), r,
                     strict=True)) for r in con.execute(f"""
        WITH x AS ({ranked.format(cols=cols, src=a.sql_source('actions'))}),
             y AS ({ranked.format(cols=cols, src=b.sql_source('actions'))})
        SELECT coalesce(x.tick, y.tick) AS tick, count(x.tick) AS actions_a,
               count(y.tick) AS actions_b,
               count(*) FILTER (WHERE x.tick IS NULL OR y.tick IS NULL OR NOT ({same})) AS d,
               d / count(*) AS share
        FROM x FULL OUTER JOIN y ON x.tick = y.tick AND x.agent_id = y.agent_id AND x.k = y.k
        GROUP BY 1 ORDER BY 1""").fetchall()]


def _society_final(con: duckdb.DuckDBPyConnection, run: RunDir) -> dict[str, float]:
    if not run.files("society"):
        return {}
    names = pq.read_schema(run.files("society")[0]).names
    cols = [c for c in SOCIETY_METRICS if c in names]
    if not cols:
        return {}
    row = con.execute(f"SELECT {', '.join(cols)} FROM {run.sql_source('society')} "
                      "ORDER BY tick DESC LIMIT 1").fetchone()
    return {f"society.{c}": v for c, v in zip(cols, row or (), strict=False)}


def _agents_final(con: duckdb.DuckDBPyConnection, run: RunDir) -> dict[str, float]:
    if not run.files("agent_state"):
        return {}
    names = pq.read_schema(run.files("agent_state")[0]).names
    cols = [c for c in AGENT_OUTCOMES if c in names]
    extra = ", count(goal_done_tick) AS goals_done" if "goal_done_tick" in names else ""
    row = con.execute(f"""
        WITH last AS (SELECT * FROM {run.sql_source('agent_state')}
                      QUALIFY tick = max(tick) OVER ())
        SELECT {', '.join(f'avg({c}) AS {c}' for c in cols)}{extra} FROM last""").fetchone()
    names_out = [f"agents.mean_{c}" for c in cols] + (["agents.goals_done"] if extra else [])
    return dict(zip(names_out, row or (), strict=False))


def _shares(con: duckdb.DuckDBPyConnection, run: RunDir, since: int) -> dict[str, float]:
    out: dict[str, float] = {}
    if run.files("actions"):
        for kind, share in con.execute(f"""
                SELECT lower(action_type), count(*) / sum(count(*)) OVER ()
                FROM {run.sql_source('actions')} WHERE tick >= ? GROUP BY 1""", [since]).fetchall():
            out[f"actions.share_{kind}" + ("" if since <= 1 else f"_from_t{since}")] = share
    if run.files("interactions"):
        for kind, n in con.execute(f"""SELECT lower(type), count(*) FROM
                {run.sql_source('interactions')} WHERE tick >= ? GROUP BY 1""", [since]).fetchall():
            out[f"interactions.{kind}" + ("" if since <= 1 else f"_from_t{since}")] = float(n)
    return out


def _outcomes(con: duckdb.DuckDBPyConnection, run: RunDir, since: int) -> dict[str, float]:
    out = {**_society_final(con, run), **_agents_final(con, run), **_shares(con, run, 1)}
    if since > 1:
        out.update(_shares(con, run, since))
    return out


def _relation(a: dict, b: dict) -> str:
    fa, fb = a.get("fork") or {}, b.get("fork") or {}
    if fb.get("parent") == a.get("run_id"):
        return f"{b['run_id']} is a fork of {a['run_id']} at tick {fb['at']}"
    if fa.get("parent") == b.get("run_id"):
        return f"{a['run_id']} is a fork of {b['run_id']} at tick {fa['at']}"
    return "independent runs"


def diff_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """Everything `steertown diff` shows, as JSON-ready data."""
    a, b = RunDir(run_a).require(), RunDir(run_b).require()
    ma, mb = a.read_manifest(), b.read_manifest()
    first = first_divergence(a.path, b.path)
    since = first[0] if first else 1
    con = new_connection()
    try:
        per_tick = action_differences(con, a, b)
        oa, ob = _outcomes(con, a, since), _outcomes(con, b, since)
    finally:
        con.close()
    outcomes = []
    for key in sorted(set(oa) | set(ob)):
        # An action or interaction kind absent from one run happened 0 times there.
        zero = 0.0 if key.startswith(("actions.", "interactions.")) else None
        va, vb = oa.get(key, zero), ob.get(key, zero)
        delta = vb - va if isinstance(va, int | float) and isinstance(vb, int | float) else None
        outcomes.append({"metric": key, "a": va, "b": vb, "b_minus_a": delta})
    changes = {**((mb.get("fork") or {}).get("changes") or {}),
               **((ma.get("fork") or {}).get("changes") or {})}
    return {
        "run_a": a.run_id, "run_b": b.run_id, "dir_a": str(a.path), "dir_b": str(b.path),
        "relation": _relation({**ma, "run_id": a.run_id}, {**mb, "run_id": b.run_id}),
        "fork_changes": changes,
        "first_divergent_tick": first[0] if first else None,
        "first_divergent_table": first[1] if first else None,
        "differing_actions": sum(r["differing"] for r in per_tick),
        "actions_compared": sum(max(r["actions_a"], r["actions_b"]) for r in per_tick),
        "per_tick": per_tick, "outcomes": outcomes,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def format_diff(d: dict[str, Any]) -> str:
    """The diff as plain text for the terminal."""
    lines = [f"diff {d['run_a']} (a) vs {d['run_b']} (b): {d['relation']}"]
    if d["fork_changes"]:
        lines.append("changes: " + ", ".join(f"{k}: {v['from']} -> {v['to']}"
                                             for k, v in d["fork_changes"].items()))
    if d["first_divergent_tick"] is None:
        lines.append("identical: no tick differs (run_id and timings aside)")
    else:
        lines.append(f"first divergent tick: {d['first_divergent_tick']} "
                     f"(table {d['first_divergent_table']}); differing actions "
                     f"{d['differing_actions']}/{d['actions_compared']}")
    lines.append("tick  actions a/b  differing  share")
    for r in d["per_tick"]:
        lines.append(f"{r['tick']:>4}  {r['actions_a']:>5}/{r['actions_b']:<5}  "
                     f"{r['differing']:>9}  {r['share_differing']:.0%}")
    width = max((len(o["metric"]) for o in d["outcomes"]), default=6)
    lines.append(f"{'metric':<{width}}  {'a':>10}  {'b':>10}  {'b - a':>10}")
    for o in d["outcomes"]:
        lines.append(f"{o['metric']:<{width}}  {_num(o['a'])}  {_num(o['b'])}  "
                     f"{_num(o['b_minus_a'])}")
    return "\n".join(lines)


def _num(v: Any) -> str:
    return f"{v:>10.4g}" if isinstance(v, int | float) else f"{'n/a':>10}"


def diff_chart(d: dict[str, Any]) -> alt.TopLevelMixin:
    """Share of differing actions per tick, with the first divergent tick marked."""
    rows = [{"tick": r["tick"], "share": r["share_differing"]} for r in d["per_tick"]]
    title = f"Differing actions per tick: {d['run_a']} vs {d['run_b']}"
    bars = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        x=alt.X("tick:O", title="tick"),
        y=alt.Y("share:Q", title="share of differing actions", scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%")),
        tooltip=["tick:O", alt.Tooltip("share:Q", format=".0%")])
    layers = [bars]
    if d["first_divergent_tick"] is not None:
        mark = [{"tick": d["first_divergent_tick"], "label": "first divergence"}]
        layers.append(alt.Chart(alt.Data(values=mark)).mark_rule(color="firebrick").encode(
            x="tick:O", tooltip=["label:N", "tick:O"]))
    return alt.layer(*layers).properties(width=520, height=180, title=title)


def write_diff(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """Compute the diff and store it in both runs (`analysis/diffs/<other>.json`)."""
    d = diff_runs(run_a, run_b)
    for own, other in ((run_a, d["run_b"]), (run_b, d["run_a"])):
        atomic_write_json(RunDir(own).path / "analysis" / "diffs" / f"{other}.json", d)
    return d


def stored_diffs(run_dir: str | Path) -> list[dict[str, Any]]:
    """Diffs stored in a run, plus one against its parent when it is a fork (computed)."""
    run = RunDir(run_dir)
    out = []
    folder = run.path / "analysis" / "diffs"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a diff is a convenience: a broken one is left out, not fatal
    fork = run.read_manifest().get("fork") or {}
    parent = Path(fork.get("parent_dir", ""))
    if fork and not any(fork["parent"] in (d["run_a"], d["run_b"]) for d in out) \
            and RunDir(parent).exists():
        out.append(diff_runs(parent, run.path))
    return out


def diff_section(ctx: Any) -> Any:
    """Report section (analysis.report SECTION_BUILDERS): this run's diffs, if any."""
    from steertown.analysis.report_sections import Section, render_fragment

    diffs = stored_diffs(ctx.run_dir)
    if not diffs:
        return None
    charts = {}
    for d in diffs:
        other = d["run_b"] if d["run_a"] == ctx.run_dir.name else d["run_a"]
        name = "diff_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in other)
        charts[name] = diff_chart(d)
    return Section("Diffs against other runs", "diffs",
                   render_fragment("sections/diff.html.j2", diffs=diffs), charts=charts)
