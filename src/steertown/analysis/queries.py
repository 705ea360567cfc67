"""DuckDB over a run directory: one view per table, and the aggregate queries.

Every aggregate runs in SQL; Python only turns result rows into dicts. Views are named
after the tables (agents, actions, messages, reflections, ticks) so `steertown show
--sql` and the analysis read the same thing. A table with no files yet is an empty
view with the contract's columns, so queries on a fresh run return empty results
instead of failing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from steertown.config import TRAITS
from steertown.storage.run_dir import RunDir
from steertown.storage.run_tables import sql_string

TABLE_NAMES: tuple[str, ...] = ("agents", "actions", "messages", "reflections", "ticks",
                                 "decisions")

# Trait bands by the agent's assigned coefficient (the brief's thresholds).
BAND_LOW, BAND_HIGH = -0.33, 0.33

# Hypotheses "more of trait T -> more of action A", tested across agents.
BEHAVIOUR_PAIRS: tuple[tuple[str, str], ...] = (
    ("TALK", "E"), ("TALK", "A"), ("WORK", "C"), ("REST", "N"), ("MOVE", "O"),
)


def connect(run_dir: Path | str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per run-directory table."""
    return RunDir(run_dir).connect(TABLE_NAMES)


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict]:
    """Run `sql` and return its rows as dicts (floats rounded to 6 places for JSON)."""
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    out = []
    for r in cur.fetchall():
        out.append({n: (round(v, 6) if isinstance(v, float) else v) for n, v in zip(names, r, strict=True)})
    return out


def one(con: duckdb.DuckDBPyConnection, sql: str) -> dict:
    r = rows(con, sql)
    return r[0] if r else {}


def action_distribution(con) -> list[dict]:
    return rows(con, """
        SELECT action_type, count(*) AS count,
               count(*) / sum(count(*)) OVER () AS share
        FROM actions GROUP BY action_type ORDER BY count DESC, action_type""")


def agent_activity(con) -> list[dict]:
    """Per agent: actions, successes, messages, tokens (agents with no rows included)."""
    return rows(con, """
        WITH ids AS (SELECT agent_id FROM agents UNION SELECT agent_id FROM actions
                     UNION SELECT agent_id FROM messages),
        a AS (SELECT agent_id, count(*) AS actions, count(*) FILTER (WHERE success) AS successes,
                     count(DISTINCT tick) AS active_ticks
              FROM actions GROUP BY agent_id),
        m AS (SELECT agent_id, count(*) AS messages, sum(tokens_in) AS tokens_in,
                     sum(tokens_out) AS tokens_out
              FROM messages GROUP BY agent_id)
        SELECT ids.agent_id, coalesce(a.actions, 0) AS actions,
               coalesce(a.successes, 0) AS successes, coalesce(a.active_ticks, 0) AS active_ticks,
               coalesce(m.messages, 0) AS messages, coalesce(m.tokens_in, 0) AS tokens_in,
               coalesce(m.tokens_out, 0) AS tokens_out
        FROM ids LEFT JOIN a USING (agent_id) LEFT JOIN m USING (agent_id)
        ORDER BY ids.agent_id""")


def quality_labels(con) -> list[dict]:
    """Free-text quality labels of action messages (messages.quality) per action type.

    Move/Rest (`none`) are left out; messages of runs written before the label existed
    count as `unlabelled`.
    """
    return rows(con, """
        SELECT a.action_type, coalesce(m.quality, 'unlabelled') AS label, count(*) AS count
        FROM messages m JOIN actions a USING (tick, event_id, agent_id)
        WHERE m.kind = 'action' AND coalesce(m.quality, '') != 'none'
        GROUP BY ALL ORDER BY a.action_type, count DESC, label""")


def talk_when_met(con) -> dict:
    """Decisions where someone was present (a Talk option was offered) and how many talked."""
    return one(con, """
        SELECT count(*) AS decisions,
               count(*) FILTER (WHERE chosen_option LIKE 'Talk %') AS talks
        FROM decisions
        WHERE len(list_filter(options, lambda o: o LIKE 'Talk %')) > 0""")


def tokens_by_action_type(con) -> list[dict]:
    """Tokens of action generations, joined to the action they produced."""
    return rows(con, """
        SELECT a.action_type, count(*) AS messages,
               sum(m.tokens_in) AS tokens_in, sum(m.tokens_out) AS tokens_out,
               avg(m.tokens_in) AS mean_tokens_in, avg(m.tokens_out) AS mean_tokens_out
        FROM messages m JOIN actions a USING (tick, event_id, agent_id)
        WHERE m.kind = 'action'
        GROUP BY a.action_type ORDER BY a.action_type""")


def tokens_by_kind(con) -> list[dict]:
    return rows(con, """
        SELECT kind, count(*) AS messages, sum(tokens_in) AS tokens_in,
               sum(tokens_out) AS tokens_out, avg(tokens_out) AS mean_tokens_out
        FROM messages GROUP BY kind ORDER BY kind""")


def token_totals(con) -> dict:
    return one(con, """
        SELECT count(*) AS messages, coalesce(sum(tokens_in), 0) AS tokens_in,
               coalesce(sum(tokens_out), 0) AS tokens_out,
               avg(tokens_in) AS mean_tokens_in, avg(tokens_out) AS mean_tokens_out
        FROM messages""")


def per_tick(con) -> list[dict]:
    """Counts and tokens per tick, from the logged rows (not the ticks table's counters)."""
    return rows(con, """
        WITH t AS (SELECT tick FROM ticks UNION SELECT tick FROM actions
                   UNION SELECT tick FROM messages),
        a AS (SELECT tick, count(*) AS actions, count(*) FILTER (WHERE success) AS successes,
                     count(DISTINCT agent_id) AS active_agents
              FROM actions GROUP BY tick),
        m AS (SELECT tick, count(*) AS messages, sum(tokens_in) AS tokens_in,
                     sum(tokens_out) AS tokens_out FROM messages GROUP BY tick)
        SELECT t.tick, coalesce(a.actions, 0) AS actions, coalesce(a.successes, 0) AS successes,
               coalesce(a.active_agents, 0) AS active_agents, coalesce(m.messages, 0) AS messages,
               coalesce(m.tokens_in, 0) AS tokens_in, coalesce(m.tokens_out, 0) AS tokens_out,
               k.tick_seconds, k.model_seconds
        FROM t LEFT JOIN a USING (tick) LEFT JOIN m USING (tick) LEFT JOIN ticks k USING (tick)
        ORDER BY t.tick""")


def actions_by_tick_type(con) -> list[dict]:
    return rows(con, """
        SELECT tick, action_type, count(*) AS count FROM actions
        GROUP BY tick, action_type ORDER BY tick, action_type""")


def moves(con) -> list[dict]:
    """Transitions between locations taken by MOVE actions that succeeded."""
    return rows(con, """
        SELECT location AS "from", location_after AS "to", count(*) AS count
        FROM actions
        WHERE upper(action_type) = 'MOVE' AND success
              AND location_after IS NOT NULL AND location IS DISTINCT FROM location_after
        GROUP BY ALL ORDER BY count DESC, "from", "to" """)


def timings(con) -> dict:
    return one(con, """
        SELECT count(tick_seconds) AS ticks_timed, sum(tick_seconds) AS total_tick_seconds,
               avg(tick_seconds) AS mean_tick_seconds, max(tick_seconds) AS max_tick_seconds,
               sum(model_seconds) AS total_model_seconds, sum(other_seconds) AS total_other_seconds,
               sum(model_seconds) / nullif(sum(tick_seconds), 0) AS model_seconds_share,
               sum(batches) AS batches
        FROM ticks""")


def success_by_action_type(con) -> list[dict]:
    return rows(con, """
        SELECT action_type, count(*) AS n, count(*) FILTER (WHERE success) AS successes,
               count(*) FILTER (WHERE success) / count(*) AS rate,
               count(*) FILTER (WHERE NOT parsed) AS unparsed
        FROM actions GROUP BY action_type ORDER BY action_type""")


def failure_reasons(con) -> list[dict]:
    return rows(con, """
        SELECT action_type, coalesce(failure_reason, '') AS failure_reason, count(*) AS count
        FROM actions WHERE NOT success GROUP BY ALL ORDER BY count DESC, action_type""")


def _agent_traits_long() -> str:
    """agents unpivoted to (agent_id, trait, value, band)."""
    unions = " UNION ALL ".join(f"SELECT agent_id, '{t}' AS trait, \"{t}\" AS value FROM agents"
                                for t in TRAITS)
    return f"""SELECT agent_id, trait, value,
                      CASE WHEN value < {BAND_LOW} THEN 'low'
                           WHEN value > {BAND_HIGH} THEN 'high' ELSE 'mid' END AS band
               FROM ({unions})"""


def success_by_trait_band(con) -> list[dict]:
    return rows(con, f"""
        WITH tl AS ({_agent_traits_long()})
        SELECT tl.trait, tl.band, count(DISTINCT tl.agent_id) AS agents,
               count(a.agent_id) AS n, count(*) FILTER (WHERE a.success) AS successes,
               count(*) FILTER (WHERE a.success) / nullif(count(a.agent_id), 0) AS rate
        FROM tl LEFT JOIN actions a USING (agent_id)
        GROUP BY tl.trait, tl.band
        ORDER BY tl.trait, CASE tl.band WHEN 'low' THEN 0 WHEN 'mid' THEN 1 ELSE 2 END""")


def steering_profiles(con) -> list[dict]:
    """Per agent: assigned coefficients and the mean alpha actually logged on its messages."""
    assigned = ", ".join(f'g."{t}" AS "{t}"' for t in TRAITS)
    logged = ", ".join(f"avg(m.alpha_{t}) AS alpha_{t}" for t in TRAITS)
    return rows(con, f"""
        SELECT g.agent_id, {assigned}, {logged}, count(m.agent_id) AS messages
        FROM agents g LEFT JOIN messages m USING (agent_id)
        GROUP BY ALL ORDER BY g.agent_id""")


def trait_stats(con) -> list[dict]:
    """Per trait: mean/variance of assigned coefficients and of per-agent mean logged alphas."""
    parts = []
    for t in TRAITS:
        parts.append(f"""
            SELECT '{t}' AS trait, (SELECT avg("{t}") FROM agents) AS assigned_mean,
                   (SELECT var_pop("{t}") FROM agents) AS assigned_variance,
                   avg(a) AS logged_mean, var_pop(a) AS logged_variance,
                   min(a) AS logged_min, max(a) AS logged_max
            FROM (SELECT avg(alpha_{t}) AS a FROM messages GROUP BY agent_id)""")
    return rows(con, " UNION ALL ".join(parts))


def steering_presence(con) -> dict:
    nonzero = " OR ".join(f"coalesce(alpha_{t}, 0) <> 0" for t in TRAITS)
    return one(con, f"""
        SELECT count(*) AS messages,
               count(*) FILTER (WHERE {nonzero}) AS nonzero_messages,
               count(*) FILTER (WHERE {nonzero}) / nullif(count(*), 0) AS nonzero_share,
               count(DISTINCT agent_id) FILTER (WHERE {nonzero}) AS agents_steered,
               list_sort(list_distinct(flatten(list(layers)))) AS layers,
               list_sort(list_distinct(list(strength) FILTER (WHERE strength IS NOT NULL)))
                   AS strengths
        FROM messages""")


# Share of each action type in each agent's actions (0 where the agent never did it).
_SHARES_SQL = """
    WITH n AS (SELECT agent_id, count(*) AS total FROM actions GROUP BY agent_id),
    c AS (SELECT agent_id, action_type, count(*) AS k FROM actions GROUP BY ALL),
    types AS (SELECT DISTINCT action_type FROM actions)
    SELECT n.agent_id, types.action_type, coalesce(c.k, 0) / n.total AS share
    FROM n CROSS JOIN types LEFT JOIN c USING (agent_id, action_type)"""


def behaviour_correlations(con) -> list[dict]:
    """Pearson and Spearman (average ranks for ties) of action share vs trait, across agents.

    Correlations are NULL where either side is constant or fewer than 3 agents acted.
    """
    return rows(con, f"""
        WITH s AS ({_SHARES_SQL}),
        tl AS ({_agent_traits_long()}),
        j AS (SELECT s.action_type, tl.trait, s.share, tl.value
              FROM s JOIN tl USING (agent_id)),
        r AS (SELECT *,
                (rank() OVER (PARTITION BY action_type, trait ORDER BY share)
                 + count(*) OVER (PARTITION BY action_type, trait)
                 - rank() OVER (PARTITION BY action_type, trait ORDER BY share DESC) + 1) / 2.0
                 AS rs,
                (rank() OVER (PARTITION BY action_type, trait ORDER BY value)
                 + count(*) OVER (PARTITION BY action_type, trait)
                 - rank() OVER (PARTITION BY action_type, trait ORDER BY value DESC) + 1) / 2.0
                 AS rv
              FROM j)
        SELECT action_type, trait, count(*) AS agents,
               CASE WHEN count(*) >= 3 AND stddev_pop(share) > 0 AND stddev_pop(value) > 0
                    THEN corr(share, value) END AS pearson,
               CASE WHEN count(*) >= 3 AND stddev_pop(rs) > 0 AND stddev_pop(rv) > 0
                    THEN corr(rs, rv) END AS spearman
        FROM r GROUP BY action_type, trait ORDER BY action_type, trait""")


def behaviour_points(con, pairs: list[tuple[str, str]]) -> list[dict]:
    """(agent, action share, trait value) points for the given (action, trait) pairs."""
    if not pairs:
        return []
    values = ", ".join(f"({sql_string(a)}, {sql_string(t)})" for a, t in pairs)
    return rows(con, f"""
        WITH n AS (SELECT agent_id, count(*) AS total FROM actions GROUP BY agent_id),
        c AS (SELECT agent_id, action_type, count(*) AS k FROM actions GROUP BY ALL),
        p(action_type, trait) AS (VALUES {values}),
        tl AS ({_agent_traits_long()})
        SELECT p.action_type, p.trait, n.agent_id, coalesce(c.k, 0) / n.total AS share,
               tl.value
        FROM p CROSS JOIN n
        LEFT JOIN c ON c.agent_id = n.agent_id AND c.action_type = p.action_type
        JOIN tl ON tl.agent_id = n.agent_id AND tl.trait = p.trait
        ORDER BY p.action_type, p.trait, n.agent_id""")
