"""The entry points configure the process before Prefect is imported.

Prefect reads its settings (PREFECT_*) and sets up logging once, at its first import, so
the project's defaults (console at WARNING, the `steertown` loggers in the run logs,
analytics off) and the no-network switches must already be in the environment then. Each
entry point is run as `python flows/<script>.py ...` with an import hook that records the
environment at Prefect's first import and stops the process there (nothing runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib.abc, json, os, runpy, sys

class FirstPrefectImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prefect":
            print("AT-PREFECT-IMPORT " + json.dumps(dict(os.environ)), flush=True)
            os._exit(0)
        return None

sys.meta_path.insert(0, FirstPrefectImport())
if sys.argv[1] == "-c":
    exec(sys.argv[2])
else:
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(sys.argv[0])  # as `python flows/<script>.py` sets it
    runpy.run_path(sys.argv[0], run_name="__main__")
print("NO-PREFECT-IMPORT", flush=True)
"""


def _clean_env(tmp: Path) -> dict[str, str]:
    """No Prefect, MLflow or offline setting of the user's: only the code sets them."""
    drop = ("PREFECT_", "MLFLOW_", "DO_NOT_TRACK", "HF_", "TRANSFORMERS_", "STEERTOWN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["HOME"] = str(tmp)  # no Prefect profile of the user's either
    return env


def _env_at_prefect_import(tmp: Path, *argv: str) -> dict[str, str] | None:
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], env=_clean_env(tmp), cwd=tmp,
                       capture_output=True, text=True, timeout=300)
    for line in r.stdout.splitlines():
        if line.startswith("AT-PREFECT-IMPORT "):
            return json.loads(line.split(" ", 1)[1])
    raise AssertionError(f"Prefect never imported (exit {r.returncode}): "
                         f"{r.stdout[-1500:]}{r.stderr[-1500:]}")


def _tiny(tmp: Path) -> list[str]:
    return ["model=mock", "memory.embedder=hashing", "steps=2", "population=4", "live=false",
            f"storage_dir={tmp / 'dumps'}", f"reports_dir={tmp / 'reports'}",
            f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}"]


def _configured(env: dict[str, str]) -> dict[str, str]:
    """The keys configure() promises, as found in `env` (missing ones as None)."""
    from flows.environment import PREFECT_DEFAULTS
    from steertown.process_env import NO_NETWORK_ENV, PROJECT_ROOT_ENV

    keys = [*PREFECT_DEFAULTS, *NO_NETWORK_ENV, PROJECT_ROOT_ENV]
    return {k: env.get(k) for k in keys}


def _expected() -> dict[str, str]:
    from flows.environment import PREFECT_DEFAULTS
    from steertown.process_env import NO_NETWORK_ENV, PROJECT_ROOT_ENV

    return {**PREFECT_DEFAULTS, **NO_NETWORK_ENV, PROJECT_ROOT_ENV: str(ROOT)}


def _continue_args(tmp: Path) -> list[str]:
    """A prepared run directory: a manifest holding a composed config (as a fork has)."""
    from flows.compose import compose_run

    run = tmp / "prepared"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": compose_run("fast", 0, _tiny(tmp))}))
    return [str(ROOT / "flows/continue_run.py"), str(run)]


ENTRY_POINTS = {
    "run": lambda tmp: [str(ROOT / "flows/run.py"), "+arm=fast", *_tiny(tmp)],
    "study, one cell after another": lambda tmp: [
        str(ROOT / "flows/study.py"), "--arms", "fast", "--seeds", "1",
        *sum((["--override", o] for o in _tiny(tmp)), [])],
    "study on dask": lambda tmp: [
        str(ROOT / "flows/study.py"), "--arms", "fast", "--seeds", "1", "--workers", "2",
        *sum((["--override", o] for o in _tiny(tmp)), [])],
    "deploy": lambda tmp: [str(ROOT / "flows/deploy.py"), "--register-only",
                           *sum((["--override", o] for o in _tiny(tmp)), [])],
    "continue_run": _continue_args,
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_prefect_is_imported_only_after_the_process_is_configured(entry, tmp_path):
    env = _env_at_prefect_import(tmp_path, *ENTRY_POINTS[entry](tmp_path))
    assert _configured(env) == _expected()


def test_the_probe_sees_an_unconfigured_import():
    """The check can fail: importing the run flow's module directly (no entry point) reaches
    Prefect before Prefect's defaults are set (the no-network ones come with steertown)."""
    env = _env_at_prefect_import(ROOT, "-c", "import flows.pipeline")
    assert env.get("PREFECT_LOGGING_EXTRA_LOGGERS") is None
    assert _configured(env) != _expected()


def test_importing_an_entry_point_imports_no_prefect(tmp_path):
    """The entry points' modules themselves import nothing of Prefect: only main() does,
    after configure()."""
    code = ("import sys, flows.run, flows.study, flows.deploy, flows.continue_run; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))")
    r = subprocess.run([sys.executable, "-c", code], env=_clean_env(tmp_path), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
