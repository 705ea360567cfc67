"""Stage 2: load the model once (per process), its trait vectors and hooks; preflight."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from steertown.config_loading import load_config
from steertown.console import say
from steertown.inference import get_backend, get_embedder
from steertown.preflight import format_findings, preflight
from steertown.steering.modes import placebo_seed, steering_record
from steertown.storage.run_dir import RunDir


@task(name="load_backend", cache_policy=NO_CACHE)
def load_backend(config: dict, run_dir: str) -> dict:
    """Load backend and embedder, run the preflight checklist, record both in the manifest."""
    cfg = load_config(config)
    backend = get_backend(cfg)
    get_embedder(cfg.memory.embedder)
    findings = preflight(cfg, backend)
    say(format_findings(findings))
    model = backend.describe()
    steering = steering_record(cfg.steering.mode, model.get("vector_id"),
                               placebo_seed(cfg.seed))
    model["vector_id"] = steering["vector_id"]  # what this run's rows were steered with
    RunDir(run_dir).update_manifest(model=model, preflight=findings, steering=steering)
    return model
