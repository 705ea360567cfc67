"""Stage 4: verify that steering was applied and changed behaviour."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from steertown.config_loading import load_config
from steertown.console import say
from steertown.inference import get_backend
from steertown.verification.progress import Progress
from steertown.verification.verdict import format_line, verify_run


@task(name="verify_steering", cache_policy=NO_CACHE)
def verify_steering(config: dict, run_dir: str) -> dict:
    """Run every check on the run's files (and its model unless disabled); print them."""
    cfg = load_config(config)
    backend = get_backend(cfg) if cfg.verification.model_checks else None
    report = verify_run(run_dir, cfg.verification.num_files, backend, progress=Progress())
    for c in report["checks"]:
        say(format_line(c))
    say(f"Steering verification: {report['verdict']}")
    return report
