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
from dataclasses import replace
from pathlib import Path

from steertown.config import VerificationConfig
from steertown.inference import get_backend
from steertown.steering.contrast_data import load_contrast_data
from steertown.storage.run_dir import RunDir
from steertown.verification.dose_response import run_sweep
from steertown.verification.model_checks import sweep_plan

# (items_per_trait, control_items, random_directions, seed of the random directions)
BUDGETS = [(4, 2, 4, 0), (4, 4, 4, 0), (4, 2, 4, 1), (4, 4, 4, 1), (4, 4, 8, 0), (8, 8, 4, 0)]


def main() -> None:
    run = Path(sys.argv[1])
    backend = get_backend(RunDir(run).config())
    traits = list(backend.traits)
    data = load_contrast_data()
    rows = []
    for items, ctrl, n_random, seed in BUDGETS:
        t0 = time.perf_counter()
        # verify's own plan (default coefficients, no Likert, no cross matrix) at this budget
        vcfg = replace(VerificationConfig(), items_per_trait=items, control_items=ctrl,
                       random_directions=n_random, seed=seed)
        result = run_sweep(backend, data, sweep_plan(vcfg, traits, 0.0, traits))
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
