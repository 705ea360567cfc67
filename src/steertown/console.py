"""`say`: progress lines for the person running steertown.

Printed to the console and logged on the `steertown.run` logger, which the flows forward
to Prefect (PREFECT_LOGGING_EXTRA_LOGGERS), so the same lines show in the run's logs in
the UI. The core does not import Prefect.
"""

from __future__ import annotations

import logging

log = logging.getLogger("steertown.run")


def say(message: str) -> None:
    """Print `message` and log it at INFO on `steertown.run`."""
    print(message, flush=True)
    log.info(message)
