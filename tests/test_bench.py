"""The benchmark: structure in tiny mode (mock backend), and its exactness check for real.

Tests never assert wall-clock times. The tiny mode checks that the bench runs end to end
and that its table has the documented sections. The batched-vs-sequential check is shown
to fail on a backend whose rows leak into each other, and to pass on the real model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_tiny_bench_table_and_exactness(tmp_path):
    bench = _bench_module()
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nhand-written notes stay\n")
    out = bench.run_bench("tiny", "mock", tmp_path / "workload.json", results, record_ticks=3)
    assert out["batched_equals_sequential"] is True
    rows = out["rows"]
    assert rows and all(set(r) == set(bench.Table.COLUMNS) for r in rows)
    sections = {r["section"] for r in rows}
    assert {"engine", "lever", "ticks", "stage", "memory", "scale"} <= sections
    stages = {r["measurement"] for r in rows if r["section"] == "stage"}
    assert {"model", "embedding", "tick other", "parquet", "checkpoint"} <= stages
    seq = next(r for r in rows if r["measurement"].startswith("sequential"))
    n = int(seq["measurement"].split("), ")[1].split()[0])
    assert n > 0 and f"{n}/{n} outputs identical" in seq["note"]
    text = results.read_text()
    assert "hand-written notes stay" in text and bench.BEGIN in text and bench.END in text
    # Re-running replaces the measured block instead of appending a second one.
    bench.write_results(results, out)
    assert results.read_text().count(bench.BEGIN) == 1


def test_workload_round_trip(tmp_path):
    bench = _bench_module()
    cfg = bench.fast_config(["model=mock", "memory.embedder=hashing", "population=6",
                             "max_events_per_tick=3"], str(tmp_path))
    path = tmp_path / "w.json"
    recorded = bench.record_workload(cfg, 2, path)
    loaded = bench.load_workload(path)
    assert [[r.request_id for r in t] for t in loaded] == [[r.request_id for r in t]
                                                          for t in recorded]
    assert loaded[0][0] == recorded[0][0]  # options come back as a tuple, dataclass-equal


class _LeakyMock:
    """A mock whose rows depend on their batch neighbours (what the check must catch)."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.layers = inner, inner.name, inner.layers

    def generate_batch(self, requests):
        out = self.inner.generate_batch(requests)
        for r in out:
            r.text += f" ({len(requests)} in batch)"
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_exactness_check_fails_when_rows_leak(tmp_path, monkeypatch):
    bench = _bench_module()
    import steertown.inference as inference

    real_get = inference.get_backend
    monkeypatch.setattr(inference, "get_backend", lambda cfg: _LeakyMock(real_get(cfg)))
    out = bench.run_bench("tiny", "mock", tmp_path / "workload.json", None, record_ticks=3)
    assert out["batched_equals_sequential"] is False
    seq = next(r for r in out["rows"] if r["measurement"].startswith("sequential"))
    assert "0/" in seq["note"]


@pytest.mark.model
def test_exactness_check_on_the_real_model():
    """Recorded fast-arm requests (tick 1, shortened), alone vs batched, on SmolLM2 fp32."""
    import dataclasses

    from tests.model_fixtures import shared_backend

    bench = _bench_module()
    ticks = bench.load_workload(bench.WORKLOAD)
    reqs = [dataclasses.replace(r, max_new_tokens=6) for r in ticks[0][:5]]
    check = bench.batched_vs_sequential(shared_backend(), [reqs], 16)
    assert check["requests"] == 5 and check["identical"] == 5


def test_full_arm_mode_runs_every_tick_end_to_end(capsys):
    bench = _bench_module()
    rc = bench.main(["--full-arm", "--set", "model=mock", "--set", "memory.embedder=hashing",
                     "--set", "steps=4", "--set", "population=6", "--no-write"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mock: 4 ticks" in out and '"ticks": 4' in out and "stage model" in out
