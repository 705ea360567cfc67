"""Behavioural fingerprint: per-agent rates that do not depend on opportunity, vs traits.

`agent_rates(run_dir)` gives one row per agent: its assigned Big Five coefficients and

- `p_<class>`: P(agent chose an option of that class | the world offered one), from the
  decisions table. "talk" is only offered when someone is present, so `p_talk` is
  P(talk | someone present); "work", "rest", "move" are offered almost always. Classes
  are the options' first words, so actions the world adds later get a rate unasked.
- `places_visited`: distinct locations the agent was at or moved to.
- `people_addressed`: distinct other agents named as the target of its actions.
- `decisions`: how many action decisions the agent made (the denominator's size).
- `final_<column>`: outcome measures from the `agent_state` table (the agent's last
  row), when the run has one (coins, goal progress, ...).

Runs without a decisions table (imported or older runs) get `p_<class>` as plain
action shares (schema metadata `rates: shares` instead of `conditional`).

`fingerprint(run_dir)` correlates every rate with every trait across agents (Spearman,
agent-bootstrap 95% CI): the trait x behaviour heatmap of the report.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from scipy.stats import rankdata

from steertown.config import TRAITS
from steertown.stats import spearman
from steertown.storage.run_dir import RunDir
from steertown.storage.run_tables import new_connection, source_sql
from steertown.storage.schema import option_class

MIN_AGENTS = 3  # fewer agents with a value: no correlation reported
ID_COLUMNS = ("agent_id", "name", *TRAITS)


def _class_rates(con: duckdb.DuckDBPyConnection, run: RunDir) -> tuple[dict, str]:
    """{agent_id: {"p_<class>": rate, "decisions": n}} and how the rates were computed."""
    out: dict[str, dict[str, float]] = {}
    decisions = run.files("decisions")
    if decisions and con.sql(f"SELECT count(*) FROM {source_sql(decisions)}").fetchall()[0][0]:
        con.create_function("option_class", option_class, [str], str)
        rows = con.execute(f"""
            WITH d AS (SELECT agent_id, tick, event_id, options, chosen_option
                       FROM {source_sql(decisions)}),
            offered AS (SELECT DISTINCT agent_id, tick, event_id, option_class(o) AS cls
                        FROM (SELECT agent_id, tick, event_id, unnest(options) AS o FROM d)),
            chosen AS (SELECT agent_id, tick, event_id, option_class(chosen_option) AS cls
                       FROM d)
            SELECT o.agent_id, o.cls, count(*) AS offered, count(c.cls) AS chosen
            FROM offered o LEFT JOIN chosen c USING (agent_id, tick, event_id, cls)
            GROUP BY ALL""").fetchall()
        for agent, cls, offered, chosen in rows:
            out.setdefault(agent, {})[f"p_{cls}"] = chosen / offered
        for agent, n in con.execute(f"SELECT agent_id, count(*) FROM {source_sql(decisions)} "
                                    "GROUP BY agent_id").fetchall():
            out.setdefault(agent, {})["decisions"] = float(n)
        return out, "conditional"
    actions = run.files("actions")
    if actions:
        rows = con.execute(f"""
            SELECT agent_id, lower(action_type) AS cls,
                   count(*) / sum(count(*)) OVER (PARTITION BY agent_id) AS share,
                   sum(count(*)) OVER (PARTITION BY agent_id) AS n
            FROM {source_sql(actions)} GROUP BY agent_id, lower(action_type)""").fetchall()
        for agent, cls, share, n in rows:
            out.setdefault(agent, {}).update({f"p_{cls}": share, "decisions": float(n)})
    return out, "shares"


def _movement_and_contacts(con: duckdb.DuckDBPyConnection, run: RunDir) -> dict:
    """{agent_id: {"places_visited": n, "people_addressed": n}} from the actions table."""
    actions = run.files("actions")
    if not actions:
        return {}
    rows = con.execute(f"""
        WITH a AS (SELECT * FROM {source_sql(actions)}),
        places AS (SELECT agent_id, count(DISTINCT loc) AS n FROM (
                     SELECT agent_id, location AS loc FROM a
                     UNION ALL SELECT agent_id, location_after FROM a) WHERE loc IS NOT NULL
                   GROUP BY agent_id),
        people AS (SELECT a.agent_id, count(DISTINCT a.target) AS n FROM a
                   JOIN agents g ON g.name = a.target AND g.agent_id <> a.agent_id
                   WHERE a.success GROUP BY a.agent_id)
        SELECT places.agent_id, places.n, coalesce(people.n, 0)
        FROM places LEFT JOIN people USING (agent_id)""").fetchall()
    return {a: {"places_visited": float(p), "people_addressed": float(q)} for a, p, q in rows}


def _outcomes(con: duckdb.DuckDBPyConnection, run: RunDir) -> dict:
    """{agent_id: {"final_<col>": value}}: numeric columns of each agent's last agent_state row."""
    files = run.files("agent_state")
    if not files:
        return {}
    last = con.sql(f"""
        SELECT * FROM {source_sql(files)}
        QUALIFY row_number() OVER (PARTITION BY agent_id ORDER BY tick DESC) = 1""").to_arrow_table()
    numeric = [f.name for f in last.schema if f.name not in ("tick", "agent_id")
               and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                    or pa.types.is_boolean(f.type))]
    cols = last.select(["agent_id", *numeric]).to_pydict()
    return {a: {f"final_{c}": (None if cols[c][i] is None else float(cols[c][i]))
                for c in numeric} for i, a in enumerate(cols["agent_id"])}


def agent_rates(run_dir: str | Path) -> pa.Table:
    """One row per agent: id, name, Big Five coefficients and its behavioural rates.

    Columns after `agent_id, name, E, A, C, O, N` are the measures (float, NULL where
    the agent had no opportunity). Schema metadata `rates` says whether `p_<class>` is
    conditional on the option being offered ("conditional") or a plain share ("shares").
    """
    run = RunDir(run_dir).require()
    agents = run.read_table("agents").select(list(ID_COLUMNS))
    con = new_connection()
    con.register("agents", agents)
    rates, how = _class_rates(con, run)
    parts = [rates, _movement_and_contacts(con, run), _outcomes(con, run)]
    ids = agents.column("agent_id").to_pylist()
    measures: dict[str, list] = {}
    for part in parts:
        names = sorted({k for v in part.values() for k in v})
        for name in names:
            measures[name] = [part.get(a, {}).get(name) for a in ids]
    order = sorted(measures, key=lambda n: (not n.startswith("p_"), n))
    table = agents
    for name in order:
        table = table.append_column(pa.field(name, pa.float64()),
                                    pa.array(measures[name], type=pa.float64()))
    return table.replace_schema_metadata({"rates": how})


def measure_names(rates: pa.Table) -> list[str]:
    """The measure columns of an `agent_rates` table (everything but ids and traits)."""
    return [n for n in rates.column_names if n not in ID_COLUMNS]


def fingerprint(run_dir: str | Path, n_boot: int = 1000, seed: int = 0,
                rates: pa.Table | None = None) -> list[dict]:
    """Spearman(trait coefficient, measure) across agents with an agent-bootstrap 95% CI.

    One row per (measure, trait): `rho`, `ci_low`, `ci_high`, `agents`. Measures with
    fewer than 3 agents or no variation get `rho` None (nothing to correlate).
    """
    rates = rates if rates is not None else agent_rates(run_dir)
    out = []
    for k, measure in enumerate(measure_names(rates)):
        y_all = np.array([np.nan if v is None else v for v in rates.column(measure).to_pylist()],
                         dtype=float)
        for j, trait in enumerate(TRAITS):
            x_all = np.array(rates.column(trait).to_pylist(), dtype=float)
            ok = np.isfinite(y_all) & np.isfinite(x_all)
            x, y = x_all[ok], y_all[ok]
            row = {"measure": measure, "trait": trait, "agents": int(ok.sum()),
                   "rho": None, "ci_low": None, "ci_high": None}
            if len(x) >= MIN_AGENTS and np.ptp(x) > 0 and np.ptp(y) > 0:
                row["rho"] = spearman(x, y)
                row["ci_low"], row["ci_high"] = spearman_bootstrap_ci(x, y, n_boot,
                                                                      seed + 31 * k + j)
            out.append(row)
    return out


BLOCK_VALUES = 1_000_000  # resampled values ranked at once (bounds memory for big towns)


def spearman_bootstrap_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float]:
    """`bootstrap_ci(len(x), lambda ix: spearman(x[ix], y[ix]), n_boot, seed, level)`,
    computed for blocks of resamples at once (the same resamples and values to rounding).

    Per resample, scipy's spearmanr costs ~0.2 ms: 500 resamples of the ~90 correlations
    of a run took ~9 s of every analysis, however small the run.
    """
    n = len(x)
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    block = max(1, BLOCK_VALUES // n)
    for start in range(0, n_boot, block):
        # one draw of (rows, n) is the same stream as `rows` draws of n
        ix = rng.integers(0, n, (min(block, n_boot - start), n))
        xs, ys = x[ix], y[ix]
        rx, ry = rankdata(xs, axis=1), rankdata(ys, axis=1)  # ties averaged, as spearmanr
        rx -= rx.mean(axis=1, keepdims=True)
        ry -= ry.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
        rho = np.clip(rho, -1.0, 1.0)
        rho[(np.ptp(xs, axis=1) == 0) | (np.ptp(ys, axis=1) == 0)] = 0.0  # as `spearman`
        vals.append(rho)
    v = np.concatenate(vals)
    v = v[np.isfinite(v)]
    lo = (1 - level) / 2
    return float(np.quantile(v, lo)), float(np.quantile(v, 1 - lo))


def fingerprint_metrics(rows: list[dict]) -> dict[str, float]:
    """Flat `fingerprint.<measure>.<trait>` -> rho (MLflow metric names), defined rows only."""
    return {f"fingerprint.{r['measure']}.{r['trait']}": float(r["rho"])
            for r in rows if r["rho"] is not None}
