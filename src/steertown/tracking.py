"""MLflow tracking of runs: the only module that imports mlflow.

One MLflow run per steertown run, found again by its `run_id` tag, so a resumed run
continues the same MLflow run (params are logged once; tick metrics of replayed ticks
are logged again at the same step, and MLflow shows the latest value). Uses
`MlflowClient` rather than the fluent API so that no global active-run state leaks
between runs started in one process.

Where: an explicit URI beats `MLFLOW_TRACKING_URI`, which beats
`sqlite:///<project_root>/mlflow.db`; with a local sqlite store artifacts go to
`mlartifacts/` beside the database.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from steertown.config import flatten
from steertown.config_loading import steering_mode

# MLflow's documented limit on a param value (6,000 characters): longer values (a long
# list in the config) are split into key.0, key.1, ... instead of being refused.
MAX_PARAM_VAL_LENGTH = 6000
# Where `make ui` serves the MLflow UI; runs link to it (STEERTOWN_MLFLOW_UI overrides).
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"

TICK_METRICS = ("events", "actions", "messages", "reflections", "successes", "tokens_in",
                "tokens_out", "batches", "tick_seconds", "model_seconds", "other_seconds",
                "success_rate", "density", "clustering", "degree_centralisation", "gini_coins",
                "goals_met", "news_reach")
_STATUS = {"finished": "FINISHED", "complete": "FINISHED", "completed": "FINISHED",
           "success": "FINISHED", "failed": "FAILED", "error": "FAILED", "killed": "KILLED",
           "interrupted": "KILLED", "running": "RUNNING"}
_BAD_NAME = re.compile(r"[^A-Za-z0-9_\-. :/]")


def tracking_uri(cfg_uri: str | None, project_root: Path) -> str:
    """Explicit URI > MLFLOW_TRACKING_URI > sqlite:///<project_root>/mlflow.db."""
    if cfg_uri:
        return cfg_uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(project_root).resolve() / 'mlflow.db'}"


def default_artifact_root(uri: str) -> Path | None:
    """`mlartifacts/` beside a local sqlite database; None for other stores (they decide)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent / "mlartifacts"
    return None


def _name(key: str) -> str:
    return _BAD_NAME.sub("_", key)[:250]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return None


def _param_items(cfg: dict[str, Any]) -> dict[str, str]:
    """Flattened config as MLflow params; values over MLflow's limit split into key.0, key.1..."""
    out: dict[str, str] = {}
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}  # Hydra's own settings aren't ours
    for k, v in flatten(cfg).items():
        s = "null" if v is None else str(v)
        if len(s) <= MAX_PARAM_VAL_LENGTH:
            out[_name(k)] = s
        else:
            for i in range(0, len(s), MAX_PARAM_VAL_LENGTH):
                out[_name(f"{k}.{i // MAX_PARAM_VAL_LENGTH}")] = s[i:i + MAX_PARAM_VAL_LENGTH]
    return out


def fork_tags(manifest: dict[str, Any]) -> dict[str, str]:
    """Tags of a forked run (steertown.sim.fork): its parent, fork tick and changes."""
    fork = manifest.get("fork")
    if not fork:
        return {}
    return {"fork_parent": str(fork["parent"]), "fork_at": str(fork["at"]),
            "fork_changes": json.dumps(fork["changes"], sort_keys=True, default=str)[:5000]}


class RunTracker:
    """An MLflow run for one steertown run; a context manager that ends it on exit."""

    def __init__(self, uri: str, experiment: str | None = None,
                 artifact_root: Path | None = None):
        self.uri = uri
        self.experiment = experiment
        self.artifact_root = artifact_root if artifact_root is not None else default_artifact_root(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.mlflow_run_id: str | None = None
        self.experiment_id: str | None = None
        self.resumed = False

    @classmethod
    def from_config(cls, cfg: dict[str, Any], project_root: Path) -> RunTracker:
        """A tracker at the config's `tracking.tracking_uri` (or the default) and experiment."""
        tr = cfg.get("tracking") or {}
        return cls(tracking_uri(tr.get("tracking_uri"), project_root),
                   tr.get("experiment") or "steertown")

    def _experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        loc = None
        if self.artifact_root is not None:
            loc = (Path(self.artifact_root).resolve() / name).as_uri()
        return self.client.create_experiment(name, artifact_location=loc)

    def ensure_experiment(self) -> str:
        """Create the store and experiment if missing (once, before parallel runs race)."""
        return self._experiment_id(self.experiment or "steertown")

    def start(self, cfg_dict: dict[str, Any], manifest: dict[str, Any],
              tags: dict[str, str] | None = None) -> str:
        """Start (or, for a run_id seen before, continue) the MLflow run; return its id."""
        name = self.experiment or (cfg_dict.get("tracking") or {}).get("experiment") or "steertown"
        exp_id = self._experiment_id(name)
        run_id = str(manifest.get("run_id") or cfg_dict.get("run_id"))
        model = manifest.get("model") or (cfg_dict.get("model") or {}).get("name")
        all_tags = {
            "run_id": run_id, "arm": str(manifest.get("arm") or cfg_dict.get("arm")),
            "config_hash": str(manifest.get("config_hash")),
            # MLflow's own tag for the commit: the UI shows it in the run's source column
            **({"mlflow.source.git.commit": str(manifest["git_sha"])}
               if manifest.get("git_sha") else {}),
            "model": str(model.get("name") if isinstance(model, dict) else model),
            "seed": str(cfg_dict.get("seed")), "source": str(manifest.get("source", "steertown")),
            "steering_mode": steering_mode(cfg_dict),
            **fork_tags(manifest),
            # what was typed: the overrides of the latest invocation (a resume may add some)
            "overrides": " ".join(manifest.get("overrides") or []) or "(none)",
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        safe_id = run_id.replace("'", "")
        found = self.client.search_runs([exp_id], f"tags.run_id = '{safe_id}'",
                                        ViewType.ACTIVE_ONLY, max_results=1,
                                        order_by=["attributes.start_time DESC"])
        if found:
            run = found[0]
            self.resumed = True
            self.client.update_run(run.info.run_id, status="RUNNING")
            n = int(run.data.tags.get("resumes", "0")) + 1
            all_tags["resumes"] = str(n)
            logged = run.data.params
        else:
            run = self.client.create_run(exp_id, run_name=run_id)
            logged = {}
        self.mlflow_run_id = run.info.run_id
        self.experiment_id = exp_id
        # MLflow params are immutable: only log those not logged before (a resume).
        params = [Param(k, v) for k, v in _param_items(cfg_dict).items() if k not in logged]
        changed = [k for k, v in _param_items(cfg_dict).items() if k in logged and logged[k] != v]
        if changed:
            all_tags["params_changed_on_resume"] = ",".join(changed)[:5000]
        self._batch(params=params, tags=[RunTag(k, v) for k, v in all_tags.items()])
        return self.mlflow_run_id

    def run_url(self) -> str | None:
        """The MLflow UI address of the current run: the tracking server itself for an
        http(s) store, else $STEERTOWN_MLFLOW_UI or `make ui`'s address."""
        if self.mlflow_run_id is None:
            return None
        base = (self.uri if self.uri.startswith(("http://", "https://"))
                else os.environ.get("STEERTOWN_MLFLOW_UI", DEFAULT_MLFLOW_UI))
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.mlflow_run_id}"

    def _require(self) -> str:
        if self.mlflow_run_id is None:
            raise RuntimeError("RunTracker.start() must be called first")
        return self.mlflow_run_id

    def _batch(self, metrics: list[Metric] = (), params: list[Param] = (),
               tags: list[RunTag] = ()) -> None:
        # MlflowClient.log_batch splits into batches within the store's limits itself.
        self.client.log_batch(self._require(), metrics=list(metrics), params=list(params),
                              tags=list(tags))

    def log_tick_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Log per-tick rows (the ticks table's columns) as metrics with step = tick.

        `success_rate` is derived from successes/actions when a row lacks it.
        """
        now = int(time.time() * 1000)
        metrics = []
        for r in rows:
            step = int(r["tick"])
            row = dict(r)
            if "success_rate" not in row and row.get("actions"):
                row["success_rate"] = (row.get("successes") or 0) / row["actions"]
            for k in TICK_METRICS:
                v = _number(row.get(k))
                if v is not None and not math.isnan(v):
                    metrics.append(Metric(k, v, now, step))
        self._batch(metrics=metrics)

    def log_metrics(self, metrics: dict[str, Any], prefix: str = "", step: int = 0) -> None:
        """Log numeric values of a (nested) dict; keys get `prefix.`; others are skipped."""
        now = int(time.time() * 1000)
        flat = flatten(metrics)
        out = []
        for k, v in flat.items():
            x = _number(v)
            if x is not None:
                out.append(Metric(_name(f"{prefix}.{k}" if prefix else k), x, now, step))
        self._batch(metrics=out)

    def log_artifacts(self, paths: list[Path | str], artifact_path: str | None = None) -> None:
        """Upload files (and whole directories) to the run's artifacts; missing paths are skipped."""
        rid = self._require()
        for p in map(Path, paths):
            if p.is_dir():
                self.client.log_artifacts(rid, str(p), artifact_path=(
                    f"{artifact_path}/{p.name}" if artifact_path else p.name))
            elif p.is_file():
                self.client.log_artifact(rid, str(p), artifact_path=artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED/FAILED/KILLED (also accepts complete/failed/interrupted)."""
        if self.mlflow_run_id is None:
            return
        s = _STATUS.get(status.lower(), status.upper())
        self.client.set_terminated(self.mlflow_run_id, status=s)
        self.mlflow_run_id = None

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")


def search_runs(uri: str, arms: list[str] | None = None,
                run_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Steertown runs in the store (any experiment), optionally only these arms/run ids.

    Returns dicts: mlflow_run_id, run_id, arm, seed, status, experiment, metrics
    (latest values), params, tags. Newest MLflow run per run_id only.
    """
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        # Opening a missing sqlite store would create an empty one as a side effect.
        raise FileNotFoundError(f"{uri[len('sqlite:///'):]}: no MLflow database here "
                                "(track a run first, or pass --tracking-uri)")
    client = MlflowClient(tracking_uri=uri)
    exps = {e.experiment_id: e.name for e in client.search_experiments()}
    out: dict[str, dict[str, Any]] = {}
    token = None
    while exps:
        page = client.search_runs(list(exps), "", ViewType.ACTIVE_ONLY, max_results=1000,
                                  order_by=["attributes.start_time DESC"], page_token=token)
        for r in page:
            tags = r.data.tags
            rid = tags.get("run_id")
            if not rid or rid in out:
                continue
            if arms and tags.get("arm") not in arms:
                continue
            if run_ids and rid not in run_ids:
                continue
            out[rid] = {"mlflow_run_id": r.info.run_id, "run_id": rid, "arm": tags.get("arm"),
                        "seed": r.data.params.get("seed", tags.get("seed")),
                        "status": r.info.status, "experiment": exps.get(r.info.experiment_id),
                        "metrics": dict(r.data.metrics), "params": dict(r.data.params),
                        "tags": dict(tags)}
        token = page.token
        if not token:
            break
    return list(out.values())


def track_study(uri: str, experiment: str, name: str, params: dict[str, Any],
                run_ids: list[str], metrics: dict[str, float],
                artifacts: list[Path | str]) -> str:
    """The study's parent MLflow run (created, or found again by name on a re-run) with
    the study's runs nested under it (`mlflow.parentRunId`), its effect sizes as metrics
    and its report as artifacts. Returns the parent's MLflow run id.

    The parent has no `run_id` tag, so `search_runs` (and compare) never count it as a run.
    """
    tracker = RunTracker(uri, experiment)
    exp_id = tracker.ensure_experiment()
    safe = name.replace("'", "")
    found = tracker.client.search_runs([exp_id], f"tags.study_name = '{safe}' and "
                                       "tags.study_parent = 'true'", ViewType.ACTIVE_ONLY,
                                       max_results=1)
    run = found[0] if found else tracker.client.create_run(
        exp_id, run_name=name, tags={"study_name": name, "study_parent": "true"})
    tracker.mlflow_run_id = run.info.run_id
    logged = run.data.params
    tracker._batch(params=[Param(k, v) for k, v in _param_items(params).items()
                           if k not in logged])
    for child in search_runs(uri, run_ids=run_ids):
        tracker.client.set_tag(child["mlflow_run_id"], "mlflow.parentRunId", run.info.run_id)
        tracker.client.set_tag(child["mlflow_run_id"], "study_name", name)
    tracker.log_metrics(metrics)
    tracker.log_artifacts(artifacts)
    tracker.end("FINISHED")
    return run.info.run_id
