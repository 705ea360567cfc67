"""A short fast-arm run on the real model, through the real entry point and Prefect flow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from steertown.config import TRAITS
from steertown.storage.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.model
@pytest.mark.slow
def test_short_fast_arm_on_smollm2(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "flows" / "run.py"), "+arm=fast", "population=4", "steps=3",
         "max_events_per_tick=3", "optimization.reflect_every_n_ticks=3", "run_id=real",
         "model.num_threads=1", "verification.model_checks=false",
         f"storage_dir={tmp_path / 'dumps'}", f"reports_dir={tmp_path / 'reports'}",
         f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "color=false",
         # the model and vector caches are shared with the other real-model tests
         f"model.cache_dir={ROOT / 'storage' / 'models'}",
         f"steering.vectors_dir={ROOT / 'storage' / 'vectors'}"],
        capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = RunDir(tmp_path / "dumps" / "real")
    m = run.read_manifest()
    assert m["status"] == "complete" and m["model"]["dtype"] and m["model"]["vector_id"]
    # The default command runs the fastest exact backend: ONNX float32 on CPU, recorded.
    assert m["model"]["backend"] == m["config"]["model"]["backend"] == "onnx"
    assert m["model"]["dtype"] == m["config"]["model"]["dtype"] == "float32"
    assert m["config"]["resolved"]["model.backend"].startswith("auto -> onnx: CPU")
    msgs = run.read_table("messages").to_pylist()
    acts = run.read_table("actions").to_pylist()
    agents = {a["agent_id"]: a for a in run.read_table("agents").to_pylist()}
    assert len([x for x in msgs if x["kind"] == "action"]) == len(acts) > 0
    assert all(x["content"].strip() for x in msgs)
    assert all(a["parsed"] for a in acts)  # constrained options: every reply is an action
    assert {a["action_type"] for a in acts} <= {"MOVE", "TALK", "WORK", "REST", "HELP",
                                                "INVITE", "ACCEPT"}  # the world's actions
    for x in msgs:
        for t in TRAITS:
            assert x[f"alpha_{t}"] == pytest.approx(agents[x["agent_id"]][t])
    assert any(x["kind"] == "reflection" for x in msgs)
    assert (tmp_path / "reports" / "real" / "index.html").is_file()
