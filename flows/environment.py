"""Process environment of the orchestration layer (flows/, tasks/): offline, no telemetry,
Prefect's logging, the project root.

Every entry point (`flows/run.py`, `study.py`, `deploy.py`, `continue_run.py`) calls
`configure()` first in its `main()`, before anything imports Prefect: Prefect reads its
settings (PREFECT_*) and sets up logging once, when it is first imported, so a default
set after that import has no effect. The modules that import Prefect are imported by the
entry points only after `configure()` (tests/test_entry_points.py records the
environment at Prefect's first import in each entry point). The no-network switches live
in `steertown.process_env` (applied by importing `steertown`), so the CLI gets them too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from steertown.process_env import PROJECT_ROOT_ENV, apply_defaults

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    # Run logs reach the Prefect UI at INFO; the console shows only warnings (the live
    # view and say() own the console).
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    # The project's own loggers (say(), model loading, checkpoints) in the run logs.
    "PREFECT_LOGGING_EXTRA_LOGGERS": "steertown",
    # Outside a flow run (e.g. before it starts) those loggers just don't go to the API.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def configure() -> Path:
    """Set the defaults (without overriding the user's) and the project's log level;
    return the project root. Idempotent: the processes that run flows without an entry
    point of ours (Dask workers, Prefect's runner) call it too; their environment is
    inherited, their log levels are not."""
    apply_defaults()  # importing steertown did it already; said here, where it matters
    for k, v in {**PREFECT_DEFAULTS, PROJECT_ROOT_ENV: str(PROJECT_ROOT)}.items():
        os.environ.setdefault(k, v)
    logging.getLogger("steertown").setLevel(logging.INFO)  # else the root's WARNING drops say()
    return PROJECT_ROOT


def child_pythonpath() -> str:
    """PYTHONPATH for the processes the flows start (Dask workers, `steertown verify`):
    this checkout's src/ and flows first, whatever checkout the venv's install points at,
    so a child runs the same code as its parent."""
    paths = (str(PROJECT_ROOT / "src"), str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))
    return os.pathsep.join(p for p in paths if p)
