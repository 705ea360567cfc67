"""Summarise a run directory's tick timings (for RESULTS.md): `python bench/fast_arm.py RUN_DIR`.

Splits ticks into action-only and reflection ticks, reports the model's share of tick
time, and projects the total for the configured number of steps from the ticks done
(useful when a full fast arm is still running or was stopped).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq


def summarise(run_dir: Path) -> dict:
    rows = [r for f in sorted((run_dir / "ticks").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    steps = int(manifest["steps"])
    every = int(manifest["config"]["optimization"]["reflect_every_n_ticks"])
    act = [r for r in rows if r["reflections"] == 0]
    ref = [r for r in rows if r["reflections"] > 0]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    a_s, r_s = mean([r["tick_seconds"] for r in act]), mean([r["tick_seconds"] for r in ref])
    n_ref = steps // every
    total = sum(r["tick_seconds"] for r in rows)
    return {
        "ticks_done": len(rows), "steps": steps, "status": manifest.get("status"),
        "tick_seconds_sum": round(total, 1),
        "model_share": round(sum(r["model_seconds"] for r in rows) / total, 3) if total else 0.0,
        "action_tick_mean_s": round(a_s, 2), "reflection_tick_mean_s": round(r_s, 2),
        "reflections_per_reflection_tick": round(mean([r["reflections"] for r in ref]), 1),
        "tokens_out_per_action_tick": round(mean([r["tokens_out"] for r in act]), 1),
        "tokens_out_per_reflection_tick": round(mean([r["tokens_out"] for r in ref]), 1),
        "projected_ticks_seconds": round(a_s * (steps - n_ref) + r_s * n_ref, 0),
    }


if __name__ == "__main__":
    print(json.dumps(summarise(Path(sys.argv[1])), indent=1))
