"""Studies: a grid of arms x seeds (x swept overrides) as parallel runs on Dask, then the
comparison of the arms.

    python flows/study.py --arms fast small --seeds 1 2 [--override steps=20 ...]
        [--modes vectors placebo prompt off]
        [--workers 2 | --address tcp://host:8786 | --gpus 4] [--start-server]

Every cell is composed exactly as `python flows/run.py -m +arm=fast,small seed=1,2 ...`
composes it (same dicts, same run_ids), and runs as one `child_run` task: the run flow
as a subflow on a Dask worker, so its stages, logs and artifacts show in the Prefect UI
under the study. A worker process loads the model once and reuses it for every run it
gets. Parallel task runners need a real Prefect server (`make ui`, or `--start-server`),
never the per-process temporary one. Re-running the same study resumes it: complete
runs are skipped, interrupted ones continue from their last checkpoint.

With `--modes`, every arm x seed also runs in each steering mode, and the comparison
adds the effect of steering (`vectors`) against each control mode, paired by seed
(analysis.study; an offline HTML report under `reports/studies/<name>/effects/`). The
study is one MLflow parent run with its runs nested under it and the effects as metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.environment import PROJECT_ROOT, configure  # noqa: E402

configure()
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # workers' INFO chatter off

from prefect import flow, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402

from flows.compose import compose_config, sweep  # noqa: E402
from steertown.config import ConfigError  # noqa: E402
from steertown.config_loading import load_config  # noqa: E402
from steertown.console import say  # noqa: E402
from steertown.sim.runner import resolve_run_id  # noqa: E402

NO_SERVER = ("PREFECT_API_URL is not set: studies run in parallel and need a real Prefect "
             "server; start one with `make ui` and export the PREFECT_API_URL it prints, "
             "or pass --start-server")


# -- tasks and flow -----------------------------------------------------------------------

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
    from flows.pipeline import run_flow

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
        runs[rid] = (f"failed: {' '.join(str(r).split())[:300] or type(r).__name__}"
                     if isinstance(r, BaseException)
                     else "skipped (complete)" if r.get("skipped") else "complete")
    done = [rid for rid, status in runs.items() if not status.startswith("failed")]
    failed = [rid for rid in run_ids if rid not in done]
    first = load_config(configs[0])
    comparison = None
    if done and first.tracking.enabled:
        uri = tracking_uri(first.tracking.tracking_uri, PROJECT_ROOT)
        out_dir = Path(first.reports_dir) / "studies" / name
        comparison = compare_arms(sorted(set(arms)), done, uri, str(out_dir))
        create_markdown_artifact(Path(comparison).read_text(), key=_key(f"study-{name}"),
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


def _key(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower())


# -- task runners -------------------------------------------------------------------------

def gpu_cluster(num_gpus: int, workers_per_gpu: int = 1):
    """A local Dask cluster with one worker process per GPU slot, each seeing only its GPU
    (CUDA_VISIBLE_DEVICES), so each loads its own model replica once."""
    from distributed import Nanny, Scheduler, SpecCluster

    from steertown.inference.sharding import gpu_worker_envs

    workers = {f"gpu-{i}": {"cls": Nanny, "options": {"nthreads": 1, "env": env,
                                                      "host": "127.0.0.1"}}
               for i, env in enumerate(gpu_worker_envs(num_gpus, workers_per_gpu))}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, name="steertown-gpus")


def task_runner(workers: int = 2, address: str | None = None, gpus: int = 0):
    """DaskTaskRunner: an existing cluster (`address`), one worker per GPU, or a
    LocalCluster of `workers` single-threaded processes on 127.0.0.1."""
    import logging

    from prefect_dask import DaskTaskRunner

    # Nannies live in this process; at shutdown they warn about workers still flushing
    # Prefect logs ("still alive after 4.0 seconds, killing"), which is harmless.
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
    if address:
        return DaskTaskRunner(address=address)
    if gpus:
        return DaskTaskRunner(cluster_class=gpu_cluster, cluster_kwargs={"num_gpus": gpus})
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": workers, "threads_per_worker": 1, "processes": True,
        "host": "127.0.0.1", "dashboard_address": ":0"})


# -- a real Prefect server (for --start-server and the tests) -----------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(api_url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until `<api_url>/health` answers; raise if the server died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server at {api_url} not healthy after {timeout:.0f} s")


@contextlib.contextmanager
def prefect_server(port: int | None = None, env: dict[str, str] | None = None,
                   log_path: Path | None = None, timeout: float = 120.0,
                   ui: bool = False) -> Iterator[str]:
    """Start `prefect server start` on 127.0.0.1 (analytics off); yield its API URL; stop it."""
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    full_env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": str(ui).lower(), **(env or {})}
    full_env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=full_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(api_url, timeout, proc)
        yield api_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if log_path:
            log.close()


def api_url() -> str | None:
    """The configured Prefect API URL (environment or profile), or None."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


# -- command line -------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flows/study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", nargs="+", required=True, help="arms to compare (conf/arm/*.yaml)")
    p.add_argument("--seeds", nargs="+", type=int, required=True, help="replicate seeds")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="Hydra override for every run (repeatable; a,b sweeps like -m)")
    p.add_argument("--modes", nargs="+", metavar="MODE",
                   help="steering modes, each arm x seed runs in each (vectors prompt placebo "
                        "off); the report gives steering's effect against each control")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    p.add_argument("--address", help="scheduler of an existing Dask cluster (tcp://host:8786)")
    p.add_argument("--gpus", type=int, default=0, help="one worker per GPU (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--name", help="study name (default: hash of its run ids)")
    p.add_argument("--start-server", action="store_true",
                   help="start a Prefect server on 127.0.0.1 for this study")
    return p.parse_args(argv)


def preflight(args: argparse.Namespace) -> list[dict]:
    """User mistakes stop here with one line, before any server or worker starts."""
    from steertown.admission import USER_ERRORS, admit_run

    if args.workers < 1 or args.gpus < 0:
        raise ConfigError("--workers must be >= 1 and --gpus >= 0")
    try:
        configs = [compose_config(job) for job in sweep(args.arms, args.seeds, args.override)]
        seen: dict[str, int] = {}
        for i, c in enumerate(configs):
            rid = admit_run(c).run.run_id
            if rid in seen:
                raise ConfigError(f"runs {seen[rid] + 1} and {i + 1} of the grid share run_id "
                                  f"{rid}; drop the fixed run_id override")
            seen[rid] = i
    except USER_ERRORS as e:
        raise ConfigError(str(e)) from None
    return configs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.modes:  # a mode sweep is one more swept override (Hydra's a,b syntax)
        args.override = [*args.override, f"steering.mode={','.join(args.modes)}"]
    try:
        configs = preflight(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    url = api_url()
    if not url and not args.start_server:
        print(f"error: {NO_SERVER}", file=sys.stderr)
        return 2
    # Dask workers are fresh processes: they find the project and the server by environment
    paths = [str(PROJECT_ROOT), str(PROJECT_ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    where = (args.address or (f"{args.gpus} GPU workers" if args.gpus
                              else f"{args.workers} local worker processes"))
    with contextlib.ExitStack() as stack:
        if args.start_server and not url:
            url = stack.enter_context(prefect_server(ui=True))
            print(f"Prefect server: {url.removesuffix('/api')} (stops when the study ends)")
        os.environ["PREFECT_API_URL"] = url
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        print(f"Study of {len(configs)} runs on {where}; watch it at {url.removesuffix('/api')}")
        t0 = time.perf_counter()
        try:
            out = study_flow.with_options(task_runner=task_runner(
                args.workers, args.address, args.gpus))(args.arms, args.seeds, args.override,
                                                         args.name)
        except Exception as e:  # noqa: BLE001 - the flow's failure, already logged in full
            print(f"error: study failed: {' '.join(str(e).split())[:400]}", file=sys.stderr)
            return 1
    print(f"Study {out['name']} done in {time.perf_counter() - t0:.0f} s:")
    for rid, status in out["runs"].items():
        print(f"  {rid}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
