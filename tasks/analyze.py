"""Stage 5: DuckDB analysis of the run's Parquet files -> analysis/summary.json."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from steertown.analysis.summary import analyze_run


@task(name="analyze", cache_policy=NO_CACHE)
def analyze(run_dir: str) -> dict:
    """Summarise actions, tokens, steering, dynamics and behaviour against traits."""
    return analyze_run(Path(run_dir))
