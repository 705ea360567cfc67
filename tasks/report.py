"""Stage 6: charts and the self-contained HTML report."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from steertown.analysis.report import write_report


@task(name="report", cache_policy=NO_CACHE)
def report(run_dir: str, reports_dir: str, summary: dict | None = None) -> str:
    """Draw the charts and write reports/<run_id>/index.html; return its path."""
    return str(write_report(Path(run_dir), Path(reports_dir), summary=summary))
