"""What-if forks: the causal effect of one agent's trait on that agent and its neighbours.

Two forks of the same parent at tick T differ only in one agent's coefficient (say E = +1
and E = -1), so every difference between them from T on is caused by that change.
`agent_measures(run_dir, agent_id, since=T)` reads, from tick T on:

- the agent's own behaviour: its actions and their shares by type, distinct places it
  was at, distinct people it addressed;
- its ties at the end (pairs with weight > 0, their total weight, friends), rebuilt from
  the interactions with the world's gains as `analysis.society` does;
- talk it received (TALK interactions aimed at it) and from how many agents;
- its neighbours (agents tied to it before T, the same in both forks): their TALK
  actions from T, and their talk to it.

`fork_effect_rows` pairs the measures of the two forks of each seed (plus minus minus).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steertown.analysis import society
from steertown.analysis.study_stats import t_summary
from steertown.world.social import FRIEND_THRESHOLD

ACTION_TYPES = ("TALK", "MOVE", "WORK", "REST", "HELP", "INVITE", "ACCEPT")


def _ties_sql(until: int | None) -> str:
    where = "" if until is None else f"AND tick <= {int(until)}"
    return f"""
        SELECT least(actor, target) AS a, greatest(actor, target) AS b,
               least(1.0, sum(gain)) AS weight
        FROM interactions JOIN tie_gain USING (type)
        WHERE target IS NOT NULL AND target <> '' AND actor <> target {where}
        GROUP BY 1, 2 HAVING least(1.0, sum(gain)) > 0"""


def agent_measures(run_dir: str | Path, agent_id: str, since: int) -> dict[str, float]:
    """The agent's and its neighbours' measures from tick `since` on (see the module)."""
    con = society.connect(run_dir)
    try:
        def one(sql: str, params: list[Any]) -> float:
            return float(con.execute(sql, params).fetchone()[0] or 0)

        out: dict[str, float] = {}
        n = one("SELECT count(*) FROM actions WHERE agent_id = ? AND tick >= ?",
                [agent_id, since])
        out["actions"] = n
        for kind in ACTION_TYPES:
            k = one("SELECT count(*) FROM actions WHERE agent_id = ? AND tick >= ? AND "
                    "upper(action_type) = ?", [agent_id, since, kind])
            out[f"share_{kind.lower()}"] = k / n if n else 0.0
        out["places_visited"] = one("""
            SELECT count(DISTINCT loc) FROM (
              SELECT location AS loc FROM actions WHERE agent_id = ? AND tick >= ?
              UNION ALL SELECT location_after FROM actions WHERE agent_id = ? AND tick >= ?)
            WHERE loc IS NOT NULL""", [agent_id, since, agent_id, since])
        out["people_addressed"] = one("""
            SELECT count(DISTINCT a.target) FROM actions a JOIN agents g
              ON g.name = a.target AND g.agent_id <> a.agent_id
            WHERE a.agent_id = ? AND a.tick >= ? AND a.success""", [agent_id, since])
        end = con.execute(f"SELECT weight FROM ({_ties_sql(None)}) WHERE a = ? OR b = ?",
                          [agent_id, agent_id]).fetchall()
        out["ties_at_end"] = float(len(end))
        out["tie_weight_at_end"] = float(sum(w for (w,) in end))
        out["friends_at_end"] = float(sum(w >= FRIEND_THRESHOLD for (w,) in end))
        out["talk_received"] = one("SELECT count(*) FROM interactions WHERE type = 'TALK' "
                                   "AND target = ? AND tick >= ?", [agent_id, since])
        out["talkers_to_agent"] = one("SELECT count(DISTINCT actor) FROM interactions WHERE "
                                      "type = 'TALK' AND target = ? AND tick >= ?",
                                      [agent_id, since])
        before = [a if b == agent_id else b for a, b, _ in con.execute(
            f"SELECT * FROM ({_ties_sql(since - 1)}) WHERE a = ? OR b = ?",
            [agent_id, agent_id]).fetchall()]
        out["neighbours_before"] = float(len(before))
        if before:
            marks = ", ".join("?" * len(before))
            out["neighbour_talk_actions"] = one(
                f"SELECT count(*) FROM actions WHERE agent_id IN ({marks}) AND tick >= ? "
                "AND upper(action_type) = 'TALK'", [*before, since])
            out["neighbour_talk_to_agent"] = one(
                f"SELECT count(*) FROM interactions WHERE type = 'TALK' AND actor IN ({marks}) "
                "AND target = ? AND tick >= ?", [*before, agent_id, since])
        else:
            out["neighbour_talk_actions"] = out["neighbour_talk_to_agent"] = 0.0
        return out
    finally:
        con.close()


def fork_effect_rows(pairs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(per seed and measure: minus, plus, plus - minus; per measure: mean over seeds of
    plus - minus with a 95% t-interval). `pairs`: {"seed", "minus": measures,
    "plus": measures}."""
    per_seed = []
    for p in pairs:
        for k in p["plus"]:
            per_seed.append({"seed": p["seed"], "measure": k, "minus": p["minus"].get(k),
                             "plus": p["plus"][k],
                             "plus_minus_minus": p["plus"][k] - p["minus"].get(k, 0.0)})
    summary = []
    for k in dict.fromkeys(r["measure"] for r in per_seed):
        s = t_summary([r["plus_minus_minus"] for r in per_seed if r["measure"] == k])
        summary.append({"measure": k, **s})
    return per_seed, summary
