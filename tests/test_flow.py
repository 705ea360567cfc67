"""End to end: `python flows/run.py` on the mock backend leaves a complete run directory,
a report and an MLflow run; re-running resumes or says it is complete."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steertown.storage import schema
from steertown.storage.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent


def run_flow(tmp: Path, *overrides: str, timeout: int = 600, flags: tuple[str, ...] = ()
             ) -> subprocess.CompletedProcess:
    args = [sys.executable, str(ROOT / "flows" / "run.py"), *flags, "+arm=fast", "model=mock",
            "memory.embedder=hashing", "population=6", "steps=7", "checkpoint_every=3",
            "max_events_per_tick=4", "optimization.reflect_every_n_ticks=2",
            f"storage_dir={tmp / 'dumps'}", f"reports_dir={tmp / 'reports'}",
            f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", "color=false", *overrides]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=tmp)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flow")
    r = run_flow(tmp, "run_id=e2e")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, r


def test_run_directory_is_complete(finished):
    tmp, _ = finished
    run = RunDir(tmp / "dumps" / "e2e")
    m = run.read_manifest()
    assert m["status"] == "complete" and m["ticks_done"] == 7 and m["arm"] == "fast"
    assert m["model"]["name"] == "mock" and m["config_hash"] and m["versions"]["prefect"]
    assert {f["check"] for f in m["preflight"]}  # preflight findings recorded
    assert "+arm=fast" in m["overrides"] and "run_id=e2e" in m["overrides"]  # as typed
    assert m["prefect"]["flow_run_name"] == "e2e" and m["prefect"]["flow_run_id"]
    # Hydra writes nothing of its own for a single run (no outputs/<date>/.hydra)
    assert not (tmp / "outputs").exists() and not (tmp / ".hydra").exists()
    assert run.completed_ticks() == list(range(1, 8))
    for table, sch in schema.TABLES.items():
        for f in run.files(table):
            assert pq.read_schema(f).names == sch.names
    agents = pq.read_table(run.path / "agents.parquet").to_pylist()
    assert len(agents) == 6 and {"E", "A", "C", "O", "N"} <= set(agents[0])
    msgs = run.read_table("messages").to_pylist()
    assert msgs and all(m["layers"] == [16] for m in msgs)
    by_agent = {a["agent_id"]: a for a in agents}
    for m in msgs:  # every message carries the steering its agent was generated with
        assert m["alpha_E"] == pytest.approx(by_agent[m["agent_id"]]["E"])
    assert {m["kind"] for m in msgs} == {"action", "reflection"}
    assert len(list(run.checkpoints.glob("*.safetensors"))) == 3  # ticks 3, 6, 7
    v = json.loads((run.path / "verification" / "report.json").read_text())
    assert v["verdict"] == "NOT VERIFIED"  # mock: the model checks cannot run
    assert {c["name"]: c["passed"] for c in v["checks"]}["logged.variation"] is True
    assert json.loads((run.path / "analysis" / "summary.json").read_text())["counts"]["ticks"] == 7


def test_report_and_live_view(finished):
    tmp, r = finished
    html = (tmp / "reports" / "e2e" / "index.html").read_text()
    assert "e2e" in html and 'src="http' not in html
    assert list((tmp / "reports" / "e2e").glob("*.png"))
    out = r.stdout
    assert "TICK 1 | 4 events scheduled" in out
    assert "SIMULATION COMPLETE" in out and "Run ID: e2e" in out
    assert "tokens]" in out and "Tick completed in" in out


def test_mlflow_run_logged(finished):
    tmp, _ = finished
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("steertown")
    runs = client.search_runs([exp.experiment_id], "tags.run_id = 'e2e'")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["arm"] == "fast" and run.data.params["population"] == "6"
    assert "run_id=e2e" in run.data.tags["overrides"]
    manifest = RunDir(tmp / "dumps" / "e2e").read_manifest()
    assert run.data.tags["prefect.flow_run_id"] == manifest["prefect"]["flow_run_id"]
    hist = client.get_metric_history(run.info.run_id, "tokens_out")
    assert sorted(m.step for m in hist) == list(range(1, 8))
    assert "verify.pass" in run.data.metrics


def test_rerun_of_a_finished_run_does_nothing(finished):
    tmp, _ = finished
    r = run_flow(tmp, "run_id=e2e")
    assert r.returncode == 0
    assert "is complete" in r.stdout


def test_progress_bar_mode_and_resume_refusal(finished):
    tmp, _ = finished
    r = run_flow(tmp, "run_id=e2e", "population=7")
    assert r.returncode == 2 and "population" in r.stderr and "Traceback" not in r.stderr
    r = run_flow(tmp, "run_id=bar", "live=false", "verification.enabled=false",
                 "tracking.enabled=false")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "TICK 1" not in r.stdout
    # one progress sequence over the run's three chunks (checkpoint_every=3), with an ETA
    assert re.findall(r"bar: (\d+)/7 ticks", r.stdout) == [str(t) for t in range(1, 8)]
    assert "bar: 7/7 ticks" in r.stdout and "eta 00:00:00" in r.stdout


def test_multirun_jobs_are_one_sweep(tmp_path):
    from mlflow.tracking import MlflowClient

    r = run_flow(tmp_path, "seed=1,2", "population=3", "steps=1", "live=false",
                 "verification.enabled=false", flags=("-m",))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("steertown")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    sweeps = {run.data.tags["sweep"] for run in runs}
    assert len(sweeps) == 1 and sweeps.pop().startswith("multirun/")
    assert sorted(run.data.tags["sweep_job"] for run in runs) == ["0", "1"]
    manifests = [RunDir(p).read_manifest() for p in (tmp_path / "dumps").iterdir()]
    assert {m["sweep"]["sweep"] for m in manifests} == {runs[0].data.tags["sweep"]}
    for run in runs:  # no Prefect UI here: no "None/flow-runs/..." link
        assert "prefect.flow_run_url" not in run.data.tags
        assert run.data.tags["mlflow.source.git.commit"]
