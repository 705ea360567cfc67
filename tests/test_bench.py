"""The benchmark in its tiny mode (mock backend, hashing embedder): structure, not timing.

Tests never assert wall-clock times; this checks that the bench runs end to end, that
its table has the documented sections, and that batched outputs equal sequential ones.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
    assert "outputs identical" in seq["note"]
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
