"""One reader of a run: `RunDir.config()` (the manifest's config with the schema's
defaults, old keys upgraded) and `RunDir.connect()` (one DuckDB view per table), used by
tracking, the report, compare and the analysis alike."""

from __future__ import annotations

import json
import subprocess

import pytest
from synthetic_run import ACTIONS, build_run

from steertown.config_loading import steering_mode, steering_mode_of_params
from steertown.storage.run_dir import RunDir, RunDirError


def _old_run(tmp_path, steering: dict):
    """The synthetic run with its manifest's steering block as an older version wrote it."""
    run = build_run(tmp_path)
    rd = RunDir(run)
    m = rd.read_manifest()
    m["config"]["steering"] = {k: v for k, v in m["config"]["steering"].items() if k != "mode"}
    m["config"]["steering"].update(steering)
    del m["config"]["inference"]["top_p"]  # a key added later: the schema's default
    rd.write_manifest(m)
    return rd


def test_config_of_an_old_run_reads_enabled_false_as_off(tmp_path):
    rd = _old_run(tmp_path, {"enabled": False})
    cfg = rd.config()
    assert cfg.steering.mode == "off"
    assert cfg.inference.top_p == 0.9  # the default
    assert steering_mode(rd.read_manifest()["config"]) == "off"
    assert steering_mode({}) == "vectors"  # no steering block: the schema's default
    assert steering_mode_of_params({"steering.enabled": "False"}) == "off"
    assert steering_mode_of_params({"steering.mode": "placebo"}) == "placebo"


def test_old_run_is_tagged_off_in_mlflow(tmp_path):
    from mlflow import MlflowClient

    from steertown.tracking import RunTracker

    rd = _old_run(tmp_path, {"enabled": False})
    m = rd.read_manifest()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with RunTracker(uri) as tr:
        mlflow_id = tr.start(m["config"], m)
    assert MlflowClient(uri).get_run(mlflow_id).data.tags["steering_mode"] == "off"


def test_report_note_reads_the_mode_through_the_reader(tmp_path):
    from steertown.analysis.report import write_report

    rd = _old_run(tmp_path, {"enabled": False})
    page = write_report(rd.path, tmp_path / "reports")
    assert "steering.mode=off" in page.read_text()


def test_config_of_a_directory_without_one(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"run_id": "x"}))
    with pytest.raises(RunDirError, match="no config"):
        RunDir(tmp_path).config()


def test_connect_views_every_table(tmp_path):
    rd = RunDir(build_run(tmp_path))
    con = rd.connect()
    n = sum(len(v) for v in ACTIONS.values())
    assert con.execute("SELECT count(*) FROM actions").fetchone()[0] == n
    assert con.execute("SELECT count(*) FROM agents").fetchone()[0] == 4
    assert con.execute("SELECT count(*) FROM society").fetchone()[0] == 0  # empty, typed view
    assert con.execute(f"SELECT count(*) FROM {rd.sql_source('actions')}").fetchone()[0] == n


def test_parquet_views_are_written_in_one_place():
    """`read_parquet(` appears in the core only in storage/run_tables.py."""
    r = subprocess.run(["grep", "-rln", "read_parquet(", "src/steertown"], capture_output=True,
                       text=True, cwd=RunDir(__file__).path.parent.parent)
    assert r.stdout.split() == ["src/steertown/storage/run_tables.py"]


def test_connections_are_single_threaded_so_figures_repeat(tmp_path):
    """A parallel mean adds in thread order: town-v1-vectors-s2's alpha_mean_A (exactly
    0.1923625) rounded to 0.192362 or 0.192363 from one analysis to the next."""
    con = RunDir(build_run(tmp_path)).connect()
    assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
    r = subprocess.run(["grep", "-rln", "duckdb.connect(", "src/steertown"], capture_output=True,
                       text=True, cwd=RunDir(__file__).path.parent.parent)
    assert r.stdout.split() == ["src/steertown/storage/run_tables.py"]  # new_connection only


def test_verification_reads_an_old_runs_mode_and_seed_through_the_reader(tmp_path):
    """Decision rows without a steering_mode (an older run) are replayed in the mode the
    run's config gives (old `enabled: false` = off), not a default of their own; the
    placebo basis seed comes from the run's config too."""
    import pyarrow.parquet as pq

    from steertown.steering.modes import placebo_seed
    from steertown.verification.decisions import run_placebo_seed, sample_decisions

    rd = _old_run(tmp_path, {"enabled": False})
    m = rd.read_manifest()
    m["config"]["seed"] = 7
    rd.write_manifest(m)
    for f in rd.files("decisions"):  # the rows as written before the column was filled
        t = pq.read_table(f)
        rows = [{**r, "option_logprob": -0.5, "steering_mode": None} for r in t.to_pylist()]
        pq.write_table(t.from_pylist(rows, schema=t.schema), f)
    decisions = sample_decisions(rd, budget=100)
    assert decisions and {d.mode for d in decisions} == {"off"}
    assert run_placebo_seed(rd) == placebo_seed(7)
