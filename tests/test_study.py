"""Studies on Dask and the UI deployment, against a real Prefect server on 127.0.0.1.

The config-level tests are fast: a study composes exactly the dicts (and so the run_ids)
of `python flows/run.py -m +arm=...,... seed=...,...`. The end-to-end tests (slow) run
a 2 x 2 study on a 2-worker LocalCluster with the mock backend, and serve the deployment
and trigger a run through the API, as the UI does.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))


def _tiny(tmp: Path) -> list[str]:
    """Overrides for a run that takes seconds: mock model, hashing embedder, 4 ticks."""
    return ["model=mock", "memory.embedder=hashing", "steps=4", "population=4",
            "checkpoint_every=2", "max_events_per_tick=3", "live=false", "color=false",
            f"storage_dir={tmp / 'dumps'}", f"reports_dir={tmp / 'reports'}",
            f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}"]


def _isolated_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A child environment with no Prefect server or profile of the user's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    env.update(extra)
    return env


# -- config level (fast) ------------------------------------------------------------------

def _hydra_multirun_configs(monkeypatch, tmp_path, argv: list[str]) -> list[dict]:
    """The dicts flows/run.py hands to the flow for `argv` (the flow itself replaced by a
    recorder, so only Hydra's composition is exercised)."""
    captured: list[dict] = []
    fake = types.ModuleType("flows.pipeline")
    fake.run_flow = lambda config, overrides=None, sweep=None: captured.append(config)
    monkeypatch.setitem(sys.modules, "flows.pipeline", fake)
    monkeypatch.setattr(sys, "argv", ["flows/run.py", *argv,
                                      f"hydra.sweep.dir={tmp_path / 'multirun'}",
                                      f"hydra.run.dir={tmp_path / 'outputs'}"])
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(ROOT / "flows/run.py"), run_name="__main__")  # as `python flows/run.py`
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    return captured


def test_study_grid_equals_hydra_multirun(monkeypatch, tmp_path):
    from flows.compose import compose_config, compose_run, sweep
    from steertown.config_loading import load_config
    from steertown.sim.runner import resolve_run_id

    extra = [*_tiny(tmp_path), "steering.strength=0.5,1.5"]
    hydra = _hydra_multirun_configs(
        monkeypatch, tmp_path, ["-m", "+arm=fast,small", "seed=1,2", *extra])
    study = [compose_config(job) for job in sweep(["fast", "small"], [1, 2], extra)]
    assert len(hydra) == 8
    assert study == hydra  # same dicts, same order
    ids = [resolve_run_id(load_config(c)) for c in study]
    assert len(set(ids)) == 8 and ids[0].startswith("fast-s1-") and ids[-1].startswith("small-s2-")
    # a single run: `python flows/run.py +arm=small seed=3 ...` == compose_run("small", 3, ...)
    (single,) = _hydra_multirun_configs(monkeypatch, tmp_path, ["+arm=small", "seed=3",
                                                                *_tiny(tmp_path)])
    assert compose_run("small", 3, _tiny(tmp_path)) == single


def test_compose_errors_are_one_line():
    from flows.compose import compose_run, sweep
    from steertown.config import ConfigError

    for bad, msg in ((["stepz=3"], "unknown key"), (["model=nope"], "unknown model"),
                     (["steps=="], "malformed")):
        with pytest.raises(ConfigError, match=msg) as e:
            compose_run("fast", 0, bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown arm"):
        sweep(["fast", "huge"], [0])
    with pytest.raises(ConfigError, match="at least one"):
        sweep([], [0])


def test_cli_user_errors_exit_2(tmp_path):
    env = _isolated_env(tmp_path)
    cases = [
        ([ROOT / "flows/study.py", "--arms", "fast", "--seeds", "1", "--workers", "2", *sum(
            (["--override", o] for o in _tiny(tmp_path)), [])], "PREFECT_API_URL is not set"),
        ([ROOT / "flows/study.py", "--arms", "fast", "--seeds", "1", "--override", "stepz=1"],
         "stepz: unknown key"),
        ([ROOT / "flows/deploy.py", "--register-only"], "PREFECT_API_URL is not set"),
        ([ROOT / "flows/deploy.py", "--cron", "every day"], "--cron"),
    ]
    for argv, msg in cases:
        p = subprocess.run([PY, *map(str, argv)], env=env, capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
        assert p.returncode == 2, (argv, p.stderr[-2000:])
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], p.stderr[-2000:]


# -- end to end against a real server (slow) ----------------------------------------------

@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real `prefect server start` on a free 127.0.0.1 port with its own home and database."""
    from flows.prefect_server import prefect_server

    tmp = tmp_path_factory.mktemp("prefect-server")
    env = {"PREFECT_HOME": str(tmp / "home"),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp / 'prefect.db'}",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    t0 = time.perf_counter()
    with prefect_server(env=env, log_path=tmp / "server.log", timeout=120) as url:
        print(f"prefect server healthy after {time.perf_counter() - t0:.1f} s")
        yield url


def _client(api_url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class _Ctx:
        def __enter__(self):
            self.settings = temporary_settings(updates={PREFECT_API_URL: api_url})
            self.settings.__enter__()
            self.client = get_client(sync_client=True)
            return self.client.__enter__()

        def __exit__(self, *exc):
            self.client.__exit__(*exc)
            self.settings.__exit__(*exc)

    return _Ctx()


@pytest.mark.slow
def test_study_on_dask(prefect_api, tmp_path):
    overrides = _tiny(tmp_path)
    env = _isolated_env(tmp_path, PREFECT_API_URL=prefect_api)
    argv = [PY, str(ROOT / "flows/study.py"), "--arms", "fast", "small", "--seeds", "1", "2",
            "--workers", "2", "--name", "test-study", *sum((["--override", o] for o in overrides), [])]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=420, cwd=ROOT)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    print(f"study of 4 runs on 2 workers: {wall:.1f} s")

    from flows.compose import compose_config, sweep
    from steertown.config_loading import load_config
    from steertown.sim.runner import resolve_run_id

    run_ids = [resolve_run_id(load_config(compose_config(j)))
               for j in sweep(["fast", "small"], [1, 2], overrides)]
    for rid in run_ids:
        manifest = json.loads((tmp_path / "dumps" / rid / "manifest.json").read_text())
        assert manifest["status"] == "complete", (rid, manifest["status"])
        assert manifest["ticks_done"] == 4
    comparison = tmp_path / "reports" / "studies" / "test-study" / "comparison.md"
    assert comparison.is_file()
    text = comparison.read_text()
    assert "fast" in text and "small" in text

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with _client(prefect_api) as client:
        study = [r for r in client.read_flow_runs() if r.parameters.get("name") == "test-study"]
        assert len(study) == 1 and study[0].state.is_completed()
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[study[0].id])))
        assert len(children) == 4 and all(r.state.is_completed() for r in children)
        keys = {a.key for a in client.read_artifacts()}
    for rid in run_ids:
        key = "".join(ch if ch.isalnum() else "-" for ch in rid.lower())
        for what in ("progress", "verification", "metrics"):
            assert f"{key}-{what}" in keys, (key, what, sorted(keys))
    assert "study-test-study" in keys


@pytest.mark.slow
def test_deployment_served_and_triggered(prefect_api, tmp_path):
    """Register and serve the deployment, trigger a run as the UI does, see it complete."""
    overrides = _tiny(tmp_path)
    env = _isolated_env(tmp_path, PREFECT_API_URL=prefect_api, PREFECT_RUNNER_POLL_FREQUENCY="2")
    argv = [PY, str(ROOT / "flows/deploy.py"), "--name", "test-deploy", "--cron", "0 3 * * *",
            "--arm", "fast", "--seed", "7", *sum((["--override", o] for o in overrides), [])]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            start_new_session=True)
    try:
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        name = "steertown-scheduled-run/test-deploy"
        deadline = time.monotonic() + 120
        deployment = None
        with _client(prefect_api) as client:
            while deployment is None:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "deployment not registered in 120 s"
                found = [d for d in client.read_deployments() if d.name == "test-deploy"]
                deployment = found[0] if found else None
                time.sleep(1)
        assert deployment.parameters["seed"] == 7
        assert deployment.parameters["overrides"] == overrides
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
        t0 = time.perf_counter()
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
            run = run_deployment(name, parameters={"arm": "small", "seed": 8,
                                                   "overrides": overrides}, timeout=240)
        assert run.state.is_completed(), (run.state, (tmp_path / "serve.log").read_text()[-3000:])
        print(f"UI-triggered run completed in {time.perf_counter() - t0:.1f} s")
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterId,
            FlowRunFilterParentFlowRunId,
        )

        with _client(prefect_api) as client:  # the pipeline's stages show as tasks
            (child,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))
            assert child.state.is_completed()
            stages = {t.name.rsplit("-", 1)[0] for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[child.id])))}
            parent = {t.name for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))}
        assert {"resolve_config", "load_backend", "simulate_chunk", "analyze"} <= stages, stages
        assert any(n.startswith("compose_config") for n in parent), parent
        runs = [p for p in (tmp_path / "dumps").iterdir() if p.name.startswith("small-s8-")]
        assert len(runs) == 1
        assert json.loads((runs[0] / "manifest.json").read_text())["status"] == "complete"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_gpu_cluster_pins_one_gpu_per_worker():
    """`--gpus N`: each Dask worker process sees only its own GPU (no GPU needed to check)."""
    from distributed import Client

    from flows.dask_cluster import gpu_cluster

    with gpu_cluster(2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    assert sorted(seen.values()) == ["0", "1"]


@pytest.mark.slow
def test_study_of_modes_on_dask_gives_paired_effects_and_a_parent_mlflow_run(prefect_api,
                                                                             tmp_path):
    """2 modes x 2 seeds on the mock through Dask: effects paired by seed, nested in MLflow."""
    overrides = ["model=mock", "memory.embedder=hashing", "steps=6", "population=10",
                 "checkpoint_every=3", "max_events_per_tick=8", "live=false", "color=false",
                 "steering.spread=0.8", f"storage_dir={tmp_path / 'dumps'}",
                 f"reports_dir={tmp_path / 'reports'}",
                 f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    env = _isolated_env(tmp_path, PREFECT_API_URL=prefect_api)
    argv = [PY, str(ROOT / "flows/study.py"), "--arms", "fast", "--modes", "vectors", "placebo",
            "--seeds", "1", "2", "--workers", "2", "--name", "mode-study",
            *sum((["--override", o] for o in overrides), [])]
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=480, cwd=ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    out = tmp_path / "reports" / "studies" / "mode-study"
    effects = json.loads((out / "effects" / "effects.json").read_text())
    assert sorted((r["mode"], r["seed"]) for r in effects["runs"]) == [
        ("placebo", 1), ("placebo", 2), ("vectors", 1), ("vectors", 2)]
    talk = next(r for r in effects["effects"] if (r["control"], r["trait"], r["measure"])
                == ("placebo", "E", "p_talk"))
    assert talk["n"] == 2 and talk["seeds"] == [1, 2] and talk["ci_low"] is not None
    assert "Effects of steering against each control" in (out / "comparison.md").read_text()
    assert "fast/vectors" in (out / "comparison.md").read_text()
    assert (out / "effects" / "index.html").is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("study_parent") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and parent.data.tags["study_name"] == "mode-study"
    assert {c.data.tags["steering_mode"] for c in children} == {"vectors", "placebo"}
    assert "effect.fast.placebo.E.p_talk" in parent.data.metrics
