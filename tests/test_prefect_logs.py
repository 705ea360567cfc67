"""The project's own log lines (say(), the steertown loggers) reach the Prefect run logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/src"]
from flows.environment import configure
configure()
import logging
from prefect import flow, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.runtime import flow_run
from steertown.console import say

@flow(name="log-probe")
def probe() -> str:
    say("said-through-steertown")
    logging.getLogger("steertown.sim.checkpoint").warning("core-module-warning")
    return str(flow_run.id)

run_id = probe()
from prefect.logging.handlers import APILogWorker
APILogWorker.drain_all(timeout=30)  # logs go to the API in batches: send what is pending
with get_client(sync_client=True) as client:
    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
for log in logs:
    print("LOG", log.name, log.message)
"""


def test_steertown_loggers_reach_prefect_run_logs(tmp_path):
    # the process's own temporary server, given time to start on a loaded machine
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    logged = [line for line in r.stdout.splitlines() if line.startswith("LOG ")]
    assert "LOG steertown.run said-through-steertown" in logged, r.stdout[-2000:]
    assert "LOG steertown.sim.checkpoint core-module-warning" in logged
    assert "said-through-steertown" in r.stdout  # and say() still prints
