"""The dose-response random-direction gate (`dose.margin.<T>`) under budget variants.

Usage: python scripts/dose_gate.py storage/dumps/<run_id> [out.json]
Loads the run's model and vectors (as `steertown verify` does) and runs the held-out sweep
at several (items_per_trait, control_items, random_directions, seed) budgets, printing
per trait the margin slope, the finite-difference slope on the control items, the random
directions' slopes and the ratio the gate compares with `min_vs_random`. The sweep does
not depend on the run's rows, only on its model, vectors and layers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from steertown.cli_commands import _run_config
from steertown.inference import get_backend
from steertown.steering.contrast_data import load_contrast_data
from steertown.verification.dose_response import SweepPlan, run_sweep, sweep_coefficients

# (items_per_trait, control_items, random_directions, seed of the random directions)
BUDGETS = [(4, 2, 4, 0), (4, 4, 4, 0), (4, 2, 4, 1), (4, 4, 4, 1), (4, 4, 8, 0), (8, 8, 4, 0)]


def main() -> None:
    run = Path(sys.argv[1])
    _, cfg = _run_config(run)
    backend = get_backend(cfg)
    data = load_contrast_data()
    rows = []
    for items, ctrl, n_random, seed in BUDGETS:
        t0 = time.perf_counter()
        plan = SweepPlan(traits=list(backend.traits),
                         coefficients=sweep_coefficients([-2, -1, 0, 1, 2]),
                         items_per_trait=items, control_items=ctrl, n_random=n_random,
                         seed=seed, likert=False, cross=False, all_traits=list(backend.traits))
        result = run_sweep(backend, data, plan)
        row = {"items_per_trait": items, "control_items": ctrl, "random_directions": n_random,
               "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
               "traits": {t: {"slope": round(r.margin.slope, 3),
                              "ci_low": round(r.margin.ci_low, 3), "fd": round(r.fd_slope, 3),
                              "random": [round(v, 3) for v in r.random_slopes],
                              "vs_random": round(r.vs_random, 2)}
                          for t, r in result.traits.items()}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
