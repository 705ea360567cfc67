"""The one way to query a run's tables with DuckDB: `connect(run)` gives an in-memory
connection with one view per table (`RunDir.connect()`), `source_sql(files)` the
`read_parquet(...)` of a set of files (`RunDir.sql_source(table)`).

A view selects the contract's columns (storage.schema) from the table's Parquet files,
`union_by_name` so files written before a column was added still read (as NULLs); a table
with no files yet is an empty view with the contract's columns, so queries on a fresh run
return empty results instead of failing. A file that lacks the columns every reader relies
on is refused with RunDirError naming it.

Every connection is single-threaded (`new_connection`): DuckDB's parallel aggregates add
floats in whatever order its threads finish, so a mean could differ in the last bits from
one call to the next, and a value on a rounding edge (0.1923625 -> 0.192362 or 0.192363)
then differed in summary.json; with one thread every figure is a function of the rows alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from steertown.storage import schema
from steertown.storage.schema import RunDirError

# a run's table name -> its Parquet files in tick order (RunDir.files)
FilesOf = Callable[[str], list[Path]]

# Columns every reader relies on; others may be missing in older files (read as NULL).
REQUIRED = {"agents": {"agent_id"}, "ticks": {"tick"},
            "actions": {"tick", "agent_id", "action_type", "success"},
            "messages": {"tick", "agent_id"}, "reflections": {"tick", "agent_id"},
            "decisions": {"tick", "agent_id"}}


def table_schema(table: str) -> pa.Schema:
    """The contract's schema of `table` (agents.parquet or a per-tick table)."""
    return schema.AGENTS if table == "agents" else schema.TABLES[table]


def sql_string(s: str) -> str:
    """`s` as a SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def source_sql(files: Iterable[Path | str]) -> str:
    """`read_parquet([...], union_by_name = true)` over `files`, for a FROM clause."""
    return f"read_parquet([{', '.join(sql_string(str(f)) for f in files)}], union_by_name = true)"


def _check_columns(con: duckdb.DuckDBPyConnection, table: str, files: list[Path]) -> None:
    listed = "[" + ", ".join(sql_string(str(f)) for f in files) + "]"
    try:
        found = con.execute(f"SELECT file_name, list(name) FROM parquet_schema({listed}) "
                            "GROUP BY file_name ORDER BY file_name").fetchall()
    except duckdb.Error as e:
        raise RunDirError(f"{table}: unreadable Parquet ({str(e).splitlines()[0]})") from None
    for name, cols in found:
        missing = sorted(REQUIRED[table] - set(cols))
        if missing:
            raise RunDirError(f"{name}: not a steertown {table} file "
                              f"(missing columns: {', '.join(missing)})")


def add_view(con: duckdb.DuckDBPyConnection, files_of: FilesOf, table: str,
             name: str = "") -> None:
    """Create view `name` (default: the table's name) over the run's `table` files."""
    name = name or table
    sch = table_schema(table)
    files = files_of(table)
    if not files:  # a registered empty Arrow table keeps the typed columns
        con.register(f"_empty_{name}", sch.empty_table())
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{name}")
        return
    if table in REQUIRED:  # the society tables are read by name only where present
        _check_columns(con, table, files)
    cols = ", ".join(f'"{n}"' for n in sch.names)
    con.execute(f"CREATE VIEW {name} AS SELECT {cols} FROM {source_sql(files)}")


def new_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose results depend only on its inputs (one thread)."""
    return duckdb.connect(":memory:", config={"threads": 1})


def connect(files_of: FilesOf, tables: Iterable[str] | None = None,
            con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (a new in-memory one unless `con`) with a view per table
    (default: agents and every per-tick table)."""
    con = con if con is not None else new_connection()
    for table in tables if tables is not None else ("agents", *schema.TABLES):
        add_view(con, files_of, table)
    return con
