"""`steertown` subcommands: user mistakes give one line on stderr and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent


def steertown(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steertown", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.fixture
def foreign_run(tmp_path):
    """A directory that looks like a run but holds Parquet files of another schema."""
    run = tmp_path / "foreign"
    (run / "messages").mkdir(parents=True)
    (run / "manifest.json").write_text('{"run_id": "foreign", "config": {}}')
    pq.write_table(pa.table({"x": [1, 2]}), run / "messages" / "messages_t00001.parquet")
    return run


@pytest.mark.parametrize("cmd", ["verify", "analyze", "show", "doctor"])
def test_missing_run_directory(cmd, tmp_path):
    r = steertown(cmd, str(tmp_path / "nope"))
    assert r.returncode == 2
    assert "no such run directory" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_directory_that_is_not_a_run(tmp_path):
    r = steertown("verify", str(tmp_path), "--no-model")
    assert r.returncode == 2 and "not a run directory" in r.stderr


def test_parquet_of_another_schema(foreign_run):
    r = steertown("verify", str(foreign_run), "--no-model")
    assert r.returncode == 2 and "missing columns" in r.stderr and "Traceback" not in r.stderr
