"""Entry point: `python flows/run.py +arm=fast [key=value ...]` (Hydra composes, the
Prefect flow runs). `-m +arm=fast,small seed=1,2` runs a grid, one flow per cell; Hydra's
own flags work as usual (`--cfg job`, `--info defaults`, `-cn <config>`)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from flows.compose import hydra_overrides, override_problem
from flows.environment import configure
from steertown.admission import USER_ERRORS, admit_run


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def run(cfg: DictConfig) -> None:
    """One job: admit the composed config, then run the flow (once per cell with -m)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    overrides = list(HydraConfig.get().overrides.task)
    try:  # user mistakes stop here, before Prefect starts or anything is written
        admitted = admit_run(data)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if admitted.complete:
        print(f"Run {admitted.run.run_id} is complete ({admitted.manifest['steps']} ticks); "
              "nothing to do. Use overwrite=true or another run_id to run it again.")
        return
    from flows.pipeline import run_flow  # imports Prefect: main() configured the process

    run_flow(data, overrides, sweep=sweep_of(HydraConfig.get()))


def sweep_of(hydra_cfg) -> dict[str, str] | None:
    """For a job of a Hydra multirun (`-m`): the sweep it belongs to (its multirun
    directory, one per invocation) and its job number, recorded in the manifest and as
    MLflow tags so the sweep's runs are found together; None for a single run."""
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return {"sweep": str(hydra_cfg.sweep.dir), "sweep_job": str(hydra_cfg.job.num)}


def main() -> None:
    """Configure the process, refuse a bad override in one line (exit 2), then hand the
    command line to Hydra."""
    configure()
    problem = override_problem(*hydra_overrides(sys.argv[1:]))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    run()


if __name__ == "__main__":
    main()
