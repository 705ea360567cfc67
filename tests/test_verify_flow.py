"""The flow's verify stage on the real model: a short fast-arm run through flows/run.py with
the model checks on (small budget), and the verdict it must reach. The run is steered at
`steering.strength=0.01` (everything delivered, exactly, but too weakly to change what the
agents decide), so the right verdict is known: FAIL, for `decisions.changed` below the
minimum effect, with the delivery checks passing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steertown.storage.run_dir import RunDir

ROOT = Path(__file__).resolve().parent.parent
BUDGET = ["verification.decision_samples=8", "verification.random_directions=1",
          "verification.items_per_trait=2", "verification.coefficients=[-2.0,0.0,2.0]",
          "verification.control_items=2", "verification.likert=false",
          "verification.cross_trait=false", "verification.coherence_prompts=1",
          "verification.messages_per_agent=1"]


@pytest.mark.model
@pytest.mark.slow
def test_flow_verify_stage_reaches_a_verdict_from_the_model_checks(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "flows" / "run.py"), "+arm=fast", "population=4", "steps=2",
         "max_events_per_tick=4", "run_id=verified", "model.num_threads=1",
         "steering.strength=0.01",
         "model.dtype=float32", "memory.embedder=hashing", *BUDGET,
         f"storage_dir={tmp_path / 'dumps'}", f"reports_dir={tmp_path / 'reports'}",
         f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", "color=false",
         "live=false", f"model.cache_dir={ROOT / 'storage' / 'models'}",
         f"steering.vectors_dir={ROOT / 'storage' / 'vectors'}"],
        capture_output=True, text=True, timeout=2400, cwd=ROOT,
        env={**__import__("os").environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})
    out = r.stdout + r.stderr
    run = RunDir(tmp_path / "dumps" / "verified")
    report = json.loads((run.path / "verification" / "report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    # The model checks ran in the flow (not skipped), and reached the right verdict.
    assert report["verdict"] == "FAIL", out[-3000:]
    assert f"Steering verification: {report['verdict']}" in out
    assert "verify: decisions in situ" in out  # the stage's progress lines, with ETA
    for name in ("logged.present", "logged.variation", "logged.diversity",
                 "mechanistic.residual", "mechanistic.batch", "decisions.replay"):
        assert checks[name]["passed"] is True, (name, checks[name]["figure"])
    assert checks["decisions.replay"]["data"]["max_abs_diff"] < 1e-3  # float32: exact
    changed = checks["decisions.changed"]
    assert changed["passed"] is False and "too little" in changed["figure"], changed["figure"]
    assert "decisions" in json.loads((run.path / "verification" / "model_checks.json")
                                     .read_text())
