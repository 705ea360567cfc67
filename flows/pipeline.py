"""The run flow: resolve_config -> load_backend -> simulate (chunks) -> verify -> analyze
-> report, wrapped in one MLflow run. Stages pass paths and plain data.

Imports Prefect: an entry point imports this module only after `configure()`
(flows/environment.py), since Prefect reads its settings when first imported."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, runtime
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.environment import PROJECT_ROOT
from steertown.analysis.summary import key_metrics
from steertown.config_loading import load_config
from steertown.console import say
from steertown.live import close_view, print_summary
from steertown.sim.runner import finish_run, resolve_run_id
from steertown.storage.lock import RunLock
from steertown.storage.run_dir import RunDir
from steertown.tracking import RunTracker
from tasks.analyze import analyze
from tasks.load_backend import load_backend
from tasks.report import report
from tasks.resolve_config import resolve_config
from tasks.simulate import simulate_chunk
from tasks.verify import verify_steering


def flow_run_name() -> str:
    """Prefect flow runs are named after the steertown run id."""
    return resolve_run_id(load_config(runtime.flow_run.parameters["config"]))


@flow(name="steertown-run", flow_run_name=flow_run_name)
def run_flow(config: dict, overrides: list[str] | None = None,
             sweep: dict[str, str] | None = None) -> dict:
    """One experiment run from a composed config dict; returns where its outputs are.

    `overrides`: the command-line overrides it was composed from, recorded in the
    manifest and in MLflow. `sweep`: for one job of a multirun, the sweep's id and the
    job's number (`{"sweep": ..., "sweep_job": ...}`), recorded and tagged the same way.
    """
    wall = time.perf_counter()
    cfg = load_config(config, new_run=True)  # fail fast on bad input, before anything is written
    run_dir = Path(cfg.storage_dir) / resolve_run_id(cfg)
    with RunLock(run_dir):
        plan = resolve_config(config)
        run = RunDir(plan["run_dir"])
        if plan["complete"]:
            say(f"Run {plan['run_id']} is complete ({plan['steps']} ticks); nothing to do. "
                "Use overwrite=true or another run_id to run it again.")
            return {"run_id": plan["run_id"], "run_dir": plan["run_dir"], "skipped": True}
        run.update_manifest(overrides=list(overrides or []), prefect=_prefect_run(),
                            **({"sweep": sweep} if sweep else {}))
        if plan["start_tick"]:
            say(f"Resuming {plan['run_id']} from the checkpoint at tick {plan['start_tick']}")
        tracker = RunTracker.from_config(config, PROJECT_ROOT) if cfg.tracking.enabled else None
        with tracker or _NoTracking() as tracker:
            model = load_backend(config, plan["run_dir"])
            tracker.start(config, {**run.read_manifest(), "model": model},
                          tags={**{f"prefect.{k}": v for k, v in _prefect_run().items()},
                                **(sweep or {})})
            _link_mlflow(tracker, plan["run_id"])
            progress = create_progress_artifact(
                100.0 * plan["start_tick"] / cfg.steps, key=artifact_key(plan["run_id"], "progress"),
                description=f"ticks done of {cfg.steps}")
            try:
                for start, end in plan["chunks"]:
                    rows = simulate_chunk(config, plan["run_dir"], start, end)
                    tracker.log_tick_metrics(rows)
                    update_progress_artifact(progress, 100.0 * end / cfg.steps)
            finally:
                close_view(plan["run_id"])  # one bar (or live view) per run, across chunks
            finish_run(plan["run_dir"])
            ticks = run.read_table("ticks").to_pylist()
            print_summary(plan["run_id"], len(ticks), cfg.population,
                          sum(t["tick_seconds"] for t in ticks), time.perf_counter() - wall,
                          cfg.color)
            verification = None
            if cfg.verification.enabled:
                verification = verify_steering(config, plan["run_dir"])
                tracker.log_metrics(_verification_metrics(verification), prefix="verify")
                create_markdown_artifact(
                    (run.path / "verification" / "report.md").read_text(),
                    key=artifact_key(plan["run_id"], "verification"))
            summary = analyze(plan["run_dir"])
            tracker.log_metrics(key_metrics(summary), prefix="summary")
            html = report(plan["run_dir"], cfg.reports_dir, summary)
            tracker.log_artifacts([run.manifest_path, run.path / "analysis",
                                   run.path / "verification", Path(html).parent])
            create_table_artifact(_key_metrics(summary, verification),
                                  key=artifact_key(plan["run_id"], "metrics"))
    say(f"Report: {html}")
    return {"run_id": plan["run_id"], "run_dir": plan["run_dir"], "report": html,
            "verdict": verification["verdict"] if verification else None}


def _prefect_run() -> dict[str, str]:
    """This flow run's id and name, and its UI address when a Prefect UI serves it."""
    from prefect.settings import PREFECT_UI_URL

    return prefect_run_fields(runtime.flow_run.id, runtime.flow_run.name, PREFECT_UI_URL.value())


def prefect_run_fields(flow_run_id, name, ui_base: str | None) -> dict[str, str]:
    """The manifest's `prefect` record: id, name and UI link. Prefect's own
    `runtime.flow_run.ui_url` formats a missing UI address as "None/flow-runs/..."; with
    no UI (an ephemeral server: PREFECT_UI_URL unset) the link is left out and the record
    says why."""
    out = {"flow_run_id": str(flow_run_id or ""), "flow_run_name": str(name or "")}
    if ui_base and flow_run_id:
        out["flow_run_url"] = f"{ui_base.rstrip('/')}/flow-runs/flow-run/{flow_run_id}"
    elif flow_run_id:
        out["flow_run_url_missing"] = "no Prefect UI: PREFECT_UI_URL is unset (start one: make ui)"
    return {k: v for k, v in out.items() if v}


def _link_mlflow(tracker, run_id: str) -> None:
    """A link from the Prefect flow run to its MLflow run (MLflow has the reverse tags)."""
    url = tracker.run_url()
    if url:
        create_link_artifact(url, link_text=f"MLflow run of {run_id}",
                             key=artifact_key(run_id, "mlflow"), description="the MLflow run")


class _NoTracking:
    """Stands in for RunTracker when `tracking.enabled: false`."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __getattr__(self, name):
        return lambda *a, **k: None


def _verification_metrics(report: dict) -> dict:
    out = {"pass": 1.0 if report["verdict"] == "PASS" else 0.0}
    for c in report["checks"]:
        if c["passed"] is not None:
            out[c["name"]] = 1.0 if c["passed"] else 0.0
        for k, v in (c.get("data") or {}).items():
            out[f"{c['name']}.{k}"] = v
    return out


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from `parts` joined by dashes: Prefect allows lowercase
    letters, digits and dashes only (the run flow's and the study flow's artifacts)."""
    return "".join(ch if ch.isalnum() else "-" for ch in "-".join(parts).lower())


def _key_metrics(summary: dict, verification: dict | None) -> list[dict]:
    rows = [{"metric": k, "value": round(v, 4)} for k, v in key_metrics(summary).items()]
    if verification:
        rows.append({"metric": "verification", "value": verification["verdict"]})
    return rows
