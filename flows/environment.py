"""Process environment for runs: offline, no telemetry, project root importable.

Imported before Prefect, transformers or MLflow so their settings take effect.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # no hub downloads at run time: models come from packages
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the temporary server must not phone home
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "PREFECT_UI_ENABLED": os.environ.get("PREFECT_UI_ENABLED", "true"),
    # Run logs reach the Prefect UI at INFO; the console shows only warnings (the live
    # view and say() own the console).
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL": "WARNING",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL": "WARNING",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
}


def configure() -> Path:
    """Set offline defaults (without overriding the user's) and make `tasks` importable."""
    for k, v in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(k, v)
    for p in (PROJECT_ROOT, PROJECT_ROOT / "src"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    return PROJECT_ROOT


def say(message: str) -> None:
    """Print to the console and log to the Prefect run (visible in the UI)."""
    print(message, flush=True)
    try:
        from prefect import get_run_logger

        get_run_logger().info(message)
    except Exception:  # outside a flow or task run: the console is enough
        pass
