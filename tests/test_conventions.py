"""What users type behaves as Hydra, argparse and Prefect promise: shell completion, the
`+` of `+arm=`, `--help`, `--version`, and no `None/...` links without a Prefect UI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "flows" / "run.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_shell_completion_reaches_hydra():
    r = run_py("-sc", "install=bash")
    assert r.returncode == 0, r.stderr
    assert "hydra_bash_completion" in r.stdout and "unknown key" not in r.stderr


def test_arm_without_plus_says_what_to_type():
    for args, typed in [(["arm=fast"], "+arm=fast"), (["-m", "arm=fast,small"], "+arm=fast,small")]:
        r = run_py(*args)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and f"write {typed}" in r.stderr
        assert "Traceback" not in r.stderr


def test_model_group_is_still_replaced_without_plus():
    r = run_py("+arm=fast", "model=mock", "--cfg", "job")
    assert r.returncode == 0, r.stderr
    assert "name: mock" in r.stdout


def test_help_shows_plus_arm():
    r = run_py("--help")
    assert r.returncode == 0
    assert "+arm=fast" in r.stdout and "(group=option)" not in r.stdout


def test_steertown_version():
    r = subprocess.run([sys.executable, "-m", "steertown", "--version"], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    from steertown import __version__

    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"steertown {__version__}"


def test_prefect_record_has_no_none_link():
    from flows.pipeline import prefect_run_fields

    no_ui = prefect_run_fields("abc", "run-1", None)
    assert "flow_run_url" not in no_ui and "PREFECT_UI_URL" in no_ui["flow_run_url_missing"]
    assert "None" not in str(no_ui)
    ui = prefect_run_fields("abc", "run-1", "http://127.0.0.1:4200/")
    assert ui["flow_run_url"] == "http://127.0.0.1:4200/flow-runs/flow-run/abc"
