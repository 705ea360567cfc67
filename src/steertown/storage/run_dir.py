"""A run directory on disk: paths, atomic writes, per-tick Parquet tables, the lock.

Every file is written to a temp file in the same directory, fsynced and renamed, so a
crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from steertown.storage import schema
from steertown.storage.schema import RunDirError as RunDirError  # defined with the contract

if TYPE_CHECKING:
    from steertown.config import RunConfig

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def load_parquet(path: Path) -> pa.Table:
    """One Parquet file's table; a corrupt or unreadable file is a one-line RunDirError."""
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise RunDirError(f"{path}: unreadable Parquet ({e})") from None


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


class RunDir:
    """Paths and I/O of `storage/dumps/<run_id>/`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def table_dir(self, table: str) -> Path:
        return self.path / table

    def tick_file(self, table: str, tick: int) -> Path:
        return self.path / table / f"{table}_t{tick:05d}.parquet"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def require(self) -> RunDir:
        """Raise RunDirError unless this is a steertown run directory."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: no such run directory")
        if not self.manifest_path.is_file():
            raise RunDirError(f"{self.path}: not a run directory (no manifest.json)")
        return self

    def config(self) -> RunConfig:
        """The run's configuration as a validated RunConfig: the one reader of a run's
        manifest config (schema defaults for keys an older run lacks; an old
        `steering.enabled: false` reads as mode "off")."""
        from steertown.config_loading import load_config

        m = self.require().read_manifest()
        if not isinstance(m.get("config"), dict):
            raise RunDirError(f"{self.manifest_path}: no config in the manifest")
        return load_config(m["config"])

    def connect(self, tables: Iterable[str] | None = None, con: Any = None) -> Any:
        """A DuckDB connection with one view per table (default: all); see run_tables."""
        from steertown.storage.run_tables import connect

        return connect(self.require().files, tables, con)

    def sql_source(self, table: str) -> str:
        """The DuckDB scan of the table's Parquet files, for a FROM clause (run_tables)."""
        from steertown.storage.run_tables import source_sql

        return source_sql(self.files(table))

    def read_manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunDirError(f"{self.manifest_path}: unreadable manifest ({e})") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        m = self.read_manifest()
        m.update(fields)
        self.write_manifest(m)
        return m

    def write_tick(self, tick: int, rows: dict[str, list[dict[str, Any]]]) -> None:
        """Write one tick's tables; `ticks` last, so its presence marks a complete tick."""
        for table in (*(t for t in schema.TABLES if t != "ticks"), "ticks"):
            t = pa.Table.from_pylist(rows.get(table, []), schema=schema.TABLES[table])
            atomic_write_parquet(self.tick_file(table, tick), t)

    def write_agents(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_parquet(self.path / "agents.parquet",
                             pa.Table.from_pylist(rows, schema=schema.AGENTS))

    def completed_ticks(self) -> list[int]:
        d = self.table_dir("ticks")
        if not d.is_dir():
            return []
        return sorted(int(p.stem.rsplit("_t", 1)[1]) for p in d.glob("ticks_t*.parquet"))

    def remove_ticks_after(self, tick: int) -> None:
        """Drop tick files newer than `tick` (they are replayed after a resume)."""
        for table in schema.TABLES:
            d = self.table_dir(table)
            if not d.is_dir():
                continue
            for p in d.glob(f"{table}_t*.parquet"):
                if int(p.stem.rsplit("_t", 1)[1]) > tick:
                    p.unlink()
            for p in d.glob(".*.tmp"):
                p.unlink()

    def files(self, table: str, limit: int = 0) -> list[Path]:
        """The table's Parquet files in tick order (first `limit` if limit > 0)."""
        if table == "agents":
            p = self.path / "agents.parquet"
            return [p] if p.is_file() else []
        files = sorted(self.table_dir(table).glob(f"{table}_t*.parquet"))
        return files[:limit] if limit > 0 else files

    def _expected(self, table: str) -> pa.Schema:
        return schema.AGENTS if table == "agents" else schema.TABLES[table]

    def _check_columns(self, f: Path, table: str, names: list[str]) -> None:
        missing = set(self._expected(table).names) - set(names)
        if missing:
            raise RunDirError(
                f"{f}: not a steertown {table} file (missing columns: {', '.join(sorted(missing))})")

    def check_schema(self, table: str, limit: int = 0) -> list[Path]:
        """The table's files, after checking each one's columns (footers only, no data)."""
        files = self.files(table, limit)
        for f in files:
            try:
                names = pq.read_schema(f).names
            except Exception as e:  # pyarrow raises several types for corrupt files
                raise RunDirError(f"{f}: unreadable Parquet ({e})") from None
            self._check_columns(f, table, names)
        return files

    def read_table(self, table: str, limit: int = 0) -> pa.Table:
        """Read a whole table, checking its columns against the schema."""
        files = self.files(table, limit)
        expected = self._expected(table)
        if not files:
            return expected.empty_table()
        parts = []
        for f in files:
            t = load_parquet(f)
            self._check_columns(f, table, t.schema.names)
            parts.append(t.select(expected.names).cast(expected))
        return pa.concat_tables(parts)
