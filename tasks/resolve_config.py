"""Stage 1: validate the composed config and create (or find) the run directory."""

from __future__ import annotations

import dataclasses

from prefect import task
from prefect.cache_policies import NO_CACHE

from steertown.config_loading import load_config
from steertown.process_env import project_root
from steertown.sim.runner import prepare_run


@task(name="resolve_config", cache_policy=NO_CACHE)
def resolve_config(config: dict) -> dict:
    """Validate against the typed schema, hash it, write the manifest; return the plan."""
    cfg = load_config(config, new_run=True)  # a run may tighten thresholds, not loosen
    return dataclasses.asdict(prepare_run(cfg, project_root()))
