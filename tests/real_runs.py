"""Small real-model runs for the verification tests: correct, steering-off and placebo.

Each run simulates `population` agents for `steps` ticks on the shared SmolLM2 backend
(in process, no Prefect), records the backend in the manifest as the flow does, and
returns the run directory. Sabotaged runs differ only in how the backend generates:

- `steering_off`: the engine logs each agent's alphas but the backend generates with
  every alpha zeroed (an engine that logs steering it never applies);
- `placebo`: `steering.mode=placebo`: the alphas multiply seeded random directions with
  the trait vectors' norms in place of the trait vectors (the experiments' control).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tests.model_fixtures import ROOT, real_cfg, shared_backend


def small_run_cfg(tmp: Path, run_id: str, population: int = 8, steps: int = 4, seed: int = 3):
    """The run config of a small real-model run (caches shared with the other tests)."""
    from steertown.config_loading import validate

    cfg = real_cfg()
    cfg.run_id, cfg.seed, cfg.population, cfg.steps = run_id, seed, population, steps
    cfg.max_events_per_tick = population
    cfg.checkpoint_every = steps
    cfg.storage_dir = str(tmp / "dumps")
    cfg.memory.embedder = "hashing"
    cfg.optimization.reflect_every_n_ticks = 1000  # decisions only: the test is about them
    cfg.steering.spread = 0.8  # agents far apart on every trait
    return validate(cfg)


class SteeringOff:
    """Backend wrapper: generates with every request's steering zeroed, logs as asked."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.name = backend.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate_batch(self, requests):
        off = [dataclasses.replace(r, steering={t: 0.0 for t in r.steering}) for r in requests]
        return self.inner.generate_batch(off)


def simulate(cfg, backend: Any) -> Path:
    """Run every tick of `cfg` on `backend`; manifest records the backend as the flow does."""
    from steertown.inference import get_embedder
    from steertown.sim.runner import finish_run, prepare_run, run_chunk
    from steertown.storage.run_dir import RunDir

    plan = prepare_run(cfg, ROOT)
    RunDir(plan.run_dir).update_manifest(model=backend.describe())
    for s, e in plan.chunks:
        run_chunk(cfg, plan.run_dir, s, e, backend, get_embedder("hashing"))
    finish_run(plan.run_dir)
    return Path(plan.run_dir)


def make_run(tmp: Path, kind: str, **size) -> Path:
    """A small run of `kind` in {"steered", "steering_off", "placebo"}."""
    backend = shared_backend()
    cfg = small_run_cfg(tmp, kind, **size)
    if kind == "steering_off":
        return simulate(cfg, SteeringOff(backend))
    if kind == "placebo":
        cfg.steering.mode = "placebo"
    return simulate(cfg, backend)
