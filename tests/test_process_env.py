"""Nothing calls home: what MLflow itself decides about telemetry in each entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Ask MLflow, after the entry point's imports, whether its telemetry is off. MLflow also
# turns it off in CI or under pytest; that must not be what makes this pass.
PROBE = """
import {entry}
import mlflow.telemetry.utils as u
print(u.is_telemetry_disabled(), u._IS_IN_CI_ENV_OR_TESTING)
"""


def _clean_env() -> dict[str, str]:
    drop = ("MLFLOW_", "DO_NOT_TRACK", "PYTEST", "CI", "GITHUB_", "BUILD", "JENKINS", "TF_BUILD")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


@pytest.mark.parametrize("entry", ["steertown.cli", "steertown.tracking", "flows.pipeline",
                                   "flows.study_flow"])
def test_mlflow_telemetry_is_off_in_every_entry_point(entry):
    r = subprocess.run([sys.executable, "-c", PROBE.format(entry=entry)], env=_clean_env(),
                       capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    disabled, ci = r.stdout.split()[-2:]
    assert ci == "False"  # the probe really runs outside MLflow's CI/testing detection
    assert disabled == "True"


def test_the_user_can_not_turn_it_back_on_by_accident():
    env = {**_clean_env(), "DO_NOT_TRACK": "1"}  # MLflow ignores "1"; ours still holds
    r = subprocess.run([sys.executable, "-c", PROBE.format(entry="steertown")], env=env,
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.stdout.split()[-2:] == ["True", "False"], r.stderr[-2000:]
