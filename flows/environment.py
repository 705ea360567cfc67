"""Process environment of the flows: offline, no telemetry, project root importable, the
project's loggers forwarded to Prefect.

Imported (and `configure()` called) before Prefect, transformers or MLflow so their
settings take effect. The no-network switches themselves live in
`steertown.process_env` (applied by importing `steertown`), so the CLI gets them too.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

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
    """Set the defaults (without overriding the user's), make `steertown`, `tasks` and
    `flows` importable (Dask workers inherit it), and return the project root."""
    for p in (PROJECT_ROOT, PROJECT_ROOT / "src"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    import steertown  # noqa: F401 - applies steertown.process_env's no-network defaults
    from steertown.process_env import PROJECT_ROOT_ENV

    for k, v in {**PREFECT_DEFAULTS, PROJECT_ROOT_ENV: str(PROJECT_ROOT)}.items():
        os.environ.setdefault(k, v)
    logging.getLogger("steertown").setLevel(logging.INFO)  # else the root's WARNING drops say()
    return PROJECT_ROOT
