"""Small real-model runs for the verification tests: correct, steering-off and placebo.

Each run simulates `population` agents for `steps` ticks on the shared SmolLM2 backend
(in process, no Prefect), records the backend in the manifest as the flow does, and
returns the run directory. Sabotaged runs differ only in how the backend generates:

- `steering_off`: the engine logs each agent's alphas but the backend generates with
  every alpha zeroed (an engine that logs steering it never applies);
- `placebo`: `steering.mode=placebo`: the alphas multiply seeded random directions with
  the trait vectors' norms in place of the trait vectors (the experiments' control);
- `prompt`, `off`: `steering.mode=prompt` / `off`;
- `weak`: `steering.strength=0.01`;
- `shuffled`: each trait's alpha steers with another trait's vector (cyclic E<-A<-C<-O<-N<-E)
  while the rows log the alphas under their own labels (the seed project's label placebo).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tests.model_fixtures import ROOT, real_cfg, shared_backend


def small_run_cfg(tmp: Path, run_id: str, population: int = 8, steps: int = 4, seed: int = 3,
                  spread: float = 0.8):
    """The run config of a small real-model run (caches shared with the other tests)."""
    from steertown.config_loading import validate

    cfg = real_cfg()
    cfg.run_id, cfg.seed, cfg.population, cfg.steps = run_id, seed, population, steps
    cfg.max_events_per_tick = population
    cfg.checkpoint_every = steps
    cfg.storage_dir = str(tmp / "dumps")
    cfg.memory.embedder = "hashing"
    cfg.optimization.reflect_every_n_ticks = 1000  # decisions only: the test is about them
    cfg.steering.spread = spread  # default 0.8: agents far apart on every trait
    # The fast arm's steering (its coefficients and strength).
    cfg.steering.coefficients = {"E": 0.3, "A": 0.2, "C": 0.2, "O": 0.0, "N": -0.1}
    cfg.steering.strength = 1.0
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


class Shuffled(SteeringOff):
    """Backend wrapper: each trait's alpha goes to the vector of `relabel[trait]`."""

    def __init__(self, backend: Any, relabel: dict[str, str]) -> None:
        super().__init__(backend)
        self.relabel = relabel

    def generate_batch(self, requests):
        moved = []
        for r in requests:
            s = {t: 0.0 for t in r.steering}
            for t, a in r.steering.items():
                s[self.relabel[t]] = s.get(self.relabel[t], 0.0) + a
            moved.append(dataclasses.replace(r, steering=s))
        return self.inner.generate_batch(moved)


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
    """A small run of `kind` in {"steered", "steering_off", "placebo", "prompt", "off",
    "weak", "shuffled"}."""
    from steertown.verification.decisions import CYCLIC_SHUFFLE

    backend = shared_backend()
    cfg = small_run_cfg(tmp, kind, **size)
    if kind == "steering_off":
        return simulate(cfg, SteeringOff(backend))
    if kind == "shuffled":
        return simulate(cfg, Shuffled(backend, CYCLIC_SHUFFLE))
    if kind in ("placebo", "prompt", "off"):
        cfg.steering.mode = kind
    if kind == "weak":
        cfg.steering.strength = 0.01
    return simulate(cfg, backend)
