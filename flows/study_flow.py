"""The parallel study flow: a grid of cells as `child_run` tasks on Dask (the run flow as a
subflow on a worker), then the comparison of the arms and the study's MLflow parent run.

Used by `flows/study.py --dask` (or --workers/--address/--gpus/--start-server). Every
cell is composed exactly as `python flows/run.py -m +arm=fast,small seed=1,2 ...`
composes it (same dicts, same run_ids). A worker process loads the model once and
reuses it for every run it gets. Re-running resumes: complete runs are skipped,
interrupted ones continue from their last checkpoint.

Imports Prefect: `flows/study.py` imports this module only after `configure()`
(flows/environment.py), since Prefect reads its settings when first imported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.compose import compose_config, sweep
from flows.environment import PROJECT_ROOT, child_pythonpath, configure
from flows.pipeline import artifact_key, run_flow
from flows.study_stages import failure
from steertown.config_loading import load_config
from steertown.console import say
from steertown.sim.runner import resolve_run_id


@task(name="compose_grid", cache_policy=NO_CACHE)
def compose_grid(arms: list[str], seeds: list[int], overrides: list[str]) -> list[dict]:
    """Compose every cell of the grid (Hydra, as flows/run.py -m does) and check it."""
    return [compose_config(job) for job in sweep(arms, seeds, overrides)]


@task(name="prepare_tracking", cache_policy=NO_CACHE)
def prepare_tracking(configs: list[dict]) -> None:
    """Create the MLflow store and experiments once, before parallel runs race to do it
    (concurrent first use of one sqlite store fails)."""
    from steertown.tracking import RunTracker

    done = set()
    for c in configs:
        if load_config(c).tracking.enabled:
            tracker = RunTracker.from_config(c, PROJECT_ROOT)
            if (tracker.uri, tracker.experiment) not in done:
                tracker.ensure_experiment()
                done.add((tracker.uri, tracker.experiment))


@task(name="child_run", cache_policy=NO_CACHE, task_run_name="run-{config[arm]}-s{config[seed]}")
def child_run(config: dict) -> dict:
    """One run of the study, on a Dask worker: the run flow as a subflow."""
    configure()  # a worker inherits the environment, not the project's log level

    return run_flow(config)


@task(name="compare_arms", cache_policy=NO_CACHE)
def compare_arms(arms: list[str], run_ids: list[str], tracking_uri: str, out_dir: str) -> str:
    """Compare the study's runs from MLflow (mean and CI per arm); return the Markdown path."""
    from steertown.analysis.compare import compare_runs

    return str(compare_runs(arms, run_ids, tracking_uri, Path(out_dir)))


@task(name="track_study", cache_policy=NO_CACHE)
def track_study(uri: str, experiment: str, name: str, params: dict, run_ids: list[str],
                out_dir: str) -> str:
    """The study's parent MLflow run, its runs nested under it, effect sizes as metrics."""
    import json

    from steertown.analysis.study import effect_metrics
    from steertown.tracking import track_study as record

    effects = Path(out_dir) / "effects" / "effects.json"
    metrics = effect_metrics(json.loads(effects.read_text())) if effects.is_file() else {}
    return record(uri, experiment, name, params, run_ids, metrics, [out_dir])


@flow(name="steertown-study")
def study_flow(arms: list[str], seeds: list[int], overrides: list[str] | None = None,
               name: str | None = None) -> dict:
    """Run the grid in parallel on the flow's task runner, then compare the arms.

    Returns {"name", "runs": {run_id: "complete" | "skipped (complete)" | "failed: ..."},
    "comparison": path or None}; fails (after comparing the rest) if any run failed.
    """
    from steertown.tracking import tracking_uri

    configs = compose_grid(arms, seeds, list(overrides or []))
    run_ids = [resolve_run_id(load_config(c)) for c in configs]
    name = name or study_name(run_ids)
    say(f"Study {name}: {len(configs)} runs: {', '.join(run_ids)}")
    prepare_tracking(configs)
    futures = [child_run.submit(c) for c in configs]
    runs: dict[str, str] = {}
    for rid, fut in zip(run_ids, futures, strict=True):
        try:  # a failed run returns its exception; a lost worker or graph error raises
            r = fut.result(raise_on_failure=False)
        except Exception as e:  # noqa: BLE001 - any failure of one run is reported, not fatal
            r = e
        runs[rid] = (failure(r) if isinstance(r, BaseException)
                     else "skipped (complete)" if r.get("skipped") else "complete")
    done = [rid for rid, status in runs.items() if not status.startswith("failed")]
    failed = [rid for rid in run_ids if rid not in done]
    first = load_config(configs[0])
    comparison = None
    if done and first.tracking.enabled:
        uri = tracking_uri(first.tracking.tracking_uri, PROJECT_ROOT)
        out_dir = Path(first.reports_dir) / "studies" / name
        comparison = compare_arms(sorted(set(arms)), done, uri, str(out_dir))
        create_markdown_artifact(Path(comparison).read_text(), key=artifact_key("study", name),
                                 description=f"{len(done)} runs of {', '.join(arms)}")
        say(f"Comparison: {comparison}")
        parent = track_study(uri, first.tracking.experiment, name,
                             {"arms": arms, "seeds": seeds, "overrides": list(overrides or [])},
                             done, str(out_dir))
        say(f"MLflow parent run of the study: {parent}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(run_ids)} runs failed: "
                           + "; ".join(f"{rid} {runs[rid]}" for rid in failed))
    return {"name": name, "runs": runs, "comparison": comparison}


def study_name(run_ids: list[str]) -> str:
    """A stable name for a set of runs: the same study resumes into the same directory."""
    return "study-" + hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()[:8]


def run_on_dask(arms: list[str], seeds: list[int], overrides: list[str], name: str | None,
                workers: int = 2, address: str | None = None, gpus: int = 0,
                start_server: bool = False) -> int:
    """Run the grid on Dask under a real Prefect server (the configured one, or one started
    for the study); print each run's status; return the exit code."""
    import contextlib
    import os
    import sys
    import time

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.dask_cluster import task_runner
    from flows.prefect_server import NO_SERVER, api_url, prefect_server

    url = api_url()
    if not url and not start_server:
        print(f"error: {NO_SERVER}", file=sys.stderr)
        return 2
    # Dask workers are fresh processes: they find the project and the server by environment
    os.environ["PYTHONPATH"] = child_pythonpath()
    where = address or (f"{gpus} GPU workers" if gpus else f"{workers} local worker processes")
    with contextlib.ExitStack() as stack:
        if start_server and not url:
            url = stack.enter_context(prefect_server(ui=True))
            print(f"Prefect server: {url.removesuffix('/api')} (stops when the study ends)")
        os.environ["PREFECT_API_URL"] = url
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        print(f"Study on {where}; watch it at {url.removesuffix('/api')}")
        t0 = time.perf_counter()
        try:
            out = study_flow.with_options(task_runner=task_runner(workers, address, gpus))(
                arms, seeds, overrides, name)
        except Exception as e:  # noqa: BLE001 - the flow's failure, already logged in full
            print(f"error: study failed: {' '.join(str(e).split())[:400]}", file=sys.stderr)
            return 1
    print(f"Study {out['name']} done in {time.perf_counter() - t0:.0f} s:")
    for rid, status in out["runs"].items():
        print(f"  {rid}: {status}")
    return 0
