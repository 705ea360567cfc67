"""The process environment every entry point shares: nothing calls home; the project root.

`apply_defaults()` runs when the `steertown` package is imported, so the CLI, the flows,
Dask workers and tests all get it before they import MLflow, transformers or Prefect's
server. Values the user set are kept (setdefault), except that nothing here turns
telemetry back on.
"""

from __future__ import annotations

import os
from pathlib import Path

# The exact switches each library reads (MLflow: MLFLOW_DISABLE_TELEMETRY, or DO_NOT_TRACK
# equal to "true"; "1" is ignored by MLflow 3.x).
NO_NETWORK_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",  # models come from local packages, never the hub
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
PROJECT_ROOT_ENV = "STEERTOWN_PROJECT_ROOT"


def apply_defaults() -> None:
    """Set `NO_NETWORK_ENV` in os.environ where the user has not set a key."""
    for k, v in NO_NETWORK_ENV.items():
        os.environ.setdefault(k, v)


def project_root() -> Path:
    """Where mlflow.db and the git checkout are: $STEERTOWN_PROJECT_ROOT (the flows set it
    to the repository), else the current directory."""
    return Path(os.environ.get(PROJECT_ROOT_ENV) or Path.cwd()).resolve()
