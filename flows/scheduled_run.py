"""The deployment's flow, `scheduled_run(arm, seed, overrides)`: one run triggered from the
Prefect UI or a schedule. `flows/deploy.py` registers and serves it; `prefect.yaml` names
this file as the entrypoint for a work pool.

It composes the config in a task, exactly as `python flows/run.py +arm=<arm> seed=<seed>
<overrides>` would (same run_id: re-triggering a run resumes or skips it), and runs the
run flow as a subflow, so the pipeline's stages and artifacts show in the UI. Imports
Prefect: `flows/deploy.py` imports it after `configure()`; Prefect's own runner loads it
with Prefect already imported, in an environment inherited from the serving process (or
the work pool's `job_variables`).
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.compose import compose_run, job_overrides
from flows.environment import configure
from steertown.admission import admit_run

FLOW_NAME = "steertown-scheduled-run"


@task(name="compose_config", cache_policy=NO_CACHE)
def compose_config_task(arm: str, seed: int, overrides: list[str]) -> dict:
    """Compose and admit the run's config as `flows/run.py +arm=<arm> seed=<seed> ...` does."""
    config = compose_run(arm, seed, overrides)
    admit_run(config)  # one-line errors (bad key, config differs from run_id, locked...)
    return config


@flow(name=FLOW_NAME)
def scheduled_run(arm: str = "fast", seed: int = 0, overrides: list[str] | None = None) -> dict:
    """One steertown run from the UI or a schedule: arm, seed and Hydra overrides
    (e.g. ["steps=50", "model=mock"])."""
    from flows.pipeline import run_flow

    configure()  # the runner's process: the environment is inherited, the log level is not
    config = compose_config_task(arm, seed, list(overrides or []))
    return run_flow(config, job_overrides(arm, seed, list(overrides or [])))
