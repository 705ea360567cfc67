"""MLflow tracking in a temporary sqlite store, resume of a tracked run, and compare."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow import MlflowClient
from synthetic_run import build_run

from steertown.analysis.compare import compare_runs
from steertown.analysis.intervals import mean_ci
from steertown.analysis.summary import analyze_run, key_metrics
from steertown.cli import main
from steertown.config import ConfigError
from steertown.storage.run_dir import RunDir
from steertown.tracking import RunTracker, search_runs, tracking_uri


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating its tables takes a few seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return root, f"sqlite:///{root / 'mlflow.db'}"


def _track(uri: str, run: Path, tags=None) -> str:
    rd = RunDir(run)
    m = rd.read_manifest()
    with RunTracker(uri) as tr:
        mlflow_id = tr.start(m["config"], m, tags)
        tr.log_tick_metrics(rd.read_table("ticks").to_pylist())
        tr.log_metrics(key_metrics(analyze_run(run)), prefix="summary")
        tr.log_artifacts([rd.manifest_path, run / "analysis", run / "nothing-here"])
    return mlflow_id


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_run_params_metrics_artifacts(store, tmp_path):
    root, uri = store
    run = build_run(tmp_path, run_id="tracked", arm="fast", seed=7)
    mlflow_id = _track(uri, run, {"extra": "yes"})
    client = MlflowClient(uri)
    r = client.get_run(mlflow_id)
    assert r.info.status == "FINISHED"
    tags = r.data.tags
    assert (tags["run_id"], tags["arm"], tags["mlflow.source.git.commit"], tags["model"],
            tags["extra"]) == (
        "tracked", "fast", "abc123", "mock", "yes")
    assert tags["config_hash"] == RunDir(run).read_manifest()["config_hash"]
    p = r.data.params
    assert p["seed"] == "7" and p["inference.max_new_tokens"] == "48" and p["layers"] == "[16]"
    hist = client.get_metric_history(mlflow_id, "tick_seconds")
    assert sorted((m.step, m.value) for m in hist) == [(1, 2.0), (2, 3.0), (3, 4.0)]
    sr = client.get_metric_history(mlflow_id, "success_rate")
    assert sorted((m.step, round(m.value, 4)) for m in sr) == [(1, 0.75), (2, 0.75), (3, 1.0)]
    assert r.data.metrics["summary.success_rate"] == pytest.approx(9 / 11, abs=1e-6)
    assert r.data.metrics["summary.usable_text_share"] == pytest.approx(0.5)  # 3 of 6 lines
    arts = {a.path for a in client.list_artifacts(mlflow_id)}
    assert {"manifest.json", "analysis"} <= arts
    assert (root / "mlartifacts").is_dir()  # artifacts beside the sqlite database


def test_resume_continues_the_same_run(store, tmp_path):
    _, uri = store
    run = build_run(tmp_path, run_id="resumed")
    m = RunDir(run).read_manifest()
    tr = RunTracker(uri)
    first = tr.start(m["config"], m)
    tr.end("failed")
    tr2 = RunTracker(uri)
    assert tr2.start(m["config"], m) == first and tr2.resumed
    tr2.log_metrics({"x": 1.0})
    tr2.end("complete")
    r = MlflowClient(uri).get_run(first)
    assert r.info.status == "FINISHED" and r.data.tags["resumes"] == "1"


def test_long_param_values_are_chunked(store, tmp_path):
    _, uri = store
    run = build_run(tmp_path, run_id="longparam")
    m = RunDir(run).read_manifest()
    cfg = dict(m["config"])
    cfg["note"] = "x" * 13000
    with RunTracker(uri) as tr:
        rid = tr.start(cfg, m)
    p = MlflowClient(uri).get_run(rid).data.params
    assert "".join(p[f"note.{i}"] for i in range(3)) == "x" * 13000


def test_context_manager_marks_failure(store, tmp_path):
    _, uri = store
    run = build_run(tmp_path, run_id="crashes")
    m = RunDir(run).read_manifest()
    with pytest.raises(RuntimeError), RunTracker(uri) as tr:
        rid = tr.start(m["config"], m)
        raise RuntimeError("boom")
    assert MlflowClient(uri).get_run(rid).info.status == "FAILED"


def test_mean_ci():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.302653 / 3**0.5, abs=1e-5)
    assert mean_ci([5.0]) == (5.0, None, None) and mean_ci([]) == (None, None, None)


def test_compare_two_arms(store, tmp_path):
    _, uri = store
    for arm, seed, scale in [("cmpfast", 1, 1.0), ("cmpfast", 2, 1.5), ("cmpsmall", 1, 3.0)]:
        _track(uri, build_run(tmp_path, run_id=f"{arm}-{seed}", arm=arm, seed=seed,
                              time_scale=scale))
    found = {r["run_id"] for r in search_runs(uri, arms=["cmpfast", "cmpsmall"])}
    assert found == {"cmpfast-1", "cmpfast-2", "cmpsmall-1"}
    md = compare_runs(["cmpfast", "cmpsmall"], None, uri, tmp_path / "out")
    text = md.read_text()
    assert "| cmpfast | 2 | 1,2 |" in text and "| cmpsmall | 1 | 1 |" in text
    with open(tmp_path / "out" / "arms.csv") as f:
        arms = {r["arm"]: r for r in csv.DictReader(f)}
    # mean tick seconds: 3.0 and 4.5 for the two fast seeds, 9.0 for the small one.
    assert float(arms["cmpfast"]["mean_tick_seconds"]) == pytest.approx(3.75)
    assert float(arms["cmpsmall"]["mean_tick_seconds"]) == pytest.approx(9.0)
    assert arms["cmpsmall"]["mean_tick_seconds_ci_low"] == ""
    assert (tmp_path / "out" / "compare_metrics.png").stat().st_size > 2000
    with open(tmp_path / "out" / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    # one run by id, through the CLI
    assert main(["compare", "--runs", "cmpsmall-1", "--tracking-uri", uri,
                 "--out", str(tmp_path / "one")]) == 0
    with pytest.raises(ConfigError, match="no tracked runs"):
        compare_runs(["nope"], None, uri, tmp_path / "none")
    missing = tmp_path / "missing.db"
    with pytest.raises(FileNotFoundError, match="no MLflow database"):
        compare_runs(None, None, f"sqlite:///{missing}", tmp_path / "none")
    assert not missing.exists()
