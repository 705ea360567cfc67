"""`steertown show`: look inside a run's tables from the terminal (DuckDB views)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from steertown.analysis import queries as q
from steertown.config import ConfigError

MAX_CELL = 60


def _cell(v: object) -> str:
    s = "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    s = s.replace("\n", " ")
    return s if len(s) <= MAX_CELL else s[: MAX_CELL - 1] + "…"


def format_rows(columns: list[str], rows: list[tuple], total: int | None = None) -> str:
    """Rows as an aligned plain-text table (long cells cut, newlines flattened)."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    shown = f"{len(rows)} row{'s' if len(rows) != 1 else ''}"
    if total is not None and total > len(rows):
        shown += f" of {total}"
    lines.append(f"({shown})")
    return "\n".join(lines)


def show_table(run_dir: Path, table: str, tick: int | None = None, agent: str | None = None,
               sql: str | None = None, limit: int = 20) -> str:
    """A run table (filtered by tick/agent) or the result of `sql`, as text.

    `sql` runs against views named after the tables: agents, actions, messages,
    reflections, ticks. Raises ConfigError for an unknown table, a filter the table
    lacks, or SQL that DuckDB rejects.
    """
    if limit < 0:
        raise ConfigError(f"--limit: {limit} is out of range; allowed: an integer >= 0 (0 = all)")
    con = q.connect(run_dir)
    try:
        if sql:
            try:
                cur = con.execute(sql)
                if cur.description is None:
                    return "(no result)"
                columns = [d[0] for d in cur.description]
                rows = cur.fetchmany(limit) if limit else cur.fetchall()
            except duckdb.Error as e:
                raise ConfigError(f"--sql: {str(e).splitlines()[0]}") from None
            return format_rows(columns, rows)
        if table not in q.TABLE_NAMES:
            raise ConfigError(f"--table: unknown table {table!r}; allowed: {', '.join(q.TABLE_NAMES)}")
        where, params = [], []
        if tick is not None:
            if table == "agents":
                raise ConfigError("--tick: the agents table has no tick column")
            where.append("tick = ?")
            params.append(tick)
        if agent is not None:
            where.append("agent_id = ?")
            params.append(agent)
        cond = f" WHERE {' AND '.join(where)}" if where else ""
        order = " ORDER BY " + {"agents": "agent_id", "ticks": "tick",
                                "reflections": "tick, agent_id"}.get(table, "tick, event_id, agent_id")
        total = con.execute(f"SELECT count(*) FROM {table}{cond}", params).fetchone()[0]
        cur = con.execute(f"SELECT * FROM {table}{cond}{order}"
                          + (f" LIMIT {int(limit)}" if limit else ""), params)
        columns = [d[0] for d in cur.description]
        return format_rows(columns, cur.fetchall(), total)
    finally:
        con.close()
