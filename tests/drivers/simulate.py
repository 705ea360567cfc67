"""Test driver: run (or resume) a simulation from a JSON config without Prefect.

Used by the fault-injection tests to kill a real process at random points.
Usage: python tests/drivers/simulate.py CONFIG.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steertown.config_loading import load_config
from steertown.inference import get_backend, get_embedder
from steertown.sim.runner import finish_run, prepare_run, run_chunk
from steertown.storage.lock import RunLock


def main(path: str) -> int:
    cfg = load_config(json.loads(Path(path).read_text()))
    run_dir = Path(cfg.storage_dir) / (cfg.run_id or "")
    with RunLock(run_dir):
        plan = prepare_run(cfg, Path("."))
        if plan.complete:
            print("complete")
            return 0
        backend, embedder = get_backend(cfg), get_embedder(cfg.memory.embedder)
        for start, end in plan.chunks:
            totals = run_chunk(cfg, plan.run_dir, start, end, backend, embedder)
            # where the chunk really started: the checkpoint it restored (0 = from scratch)
            print(f"chunk {start}-{end} restored_from {totals['restored_from']}", flush=True)
        finish_run(plan.run_dir)
    print("finished")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
