"""Entry point: `python flows/run.py +arm=fast [key=value ...]` (Hydra composes, the
Prefect flow runs). `-m +arm=fast,small seed=1,2` runs a grid, one flow per cell."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.environment import PROJECT_ROOT, configure  # noqa: E402

configure()

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from steertown.cli import USER_ERRORS  # noqa: E402
from steertown.storage.lock import RunLockedError  # noqa: E402

CONF = PROJECT_ROOT / "conf"


def check_overrides(argv: list[str]) -> str | None:
    """One-line message for a malformed override or unknown arm/model, else None.

    Hydra's own errors for these are multi-line; users get one line and exit code 2.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [a for a in argv if not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        return f"malformed override: {str(e).splitlines()[0]}"
    from steertown.config import RunConfig, flatten

    known = set(flatten(RunConfig().to_dict()))
    for o in overrides:
        group = o.key_or_group
        if group not in ("arm", "model"):
            if not (group.startswith("hydra") or o.is_add() or group in known
                    or any(k.startswith(group + ".") or group.startswith(k + ".")
                           for k in known)):
                return f"{group}: unknown key; see conf/config.yaml for the keys"
            continue
        values = o.value()
        values = [values] if isinstance(values, str) else list(getattr(values, "list", values))
        for v in values:
            if not (CONF / group / f"{v}.yaml").is_file():
                allowed = " | ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))
                return f"{group}: unknown {group} {v!r}; allowed: {allowed}"
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from steertown.config import load_config
    from steertown.sim.runner import check_run
    from steertown.storage.lock import RunLock

    data = OmegaConf.to_container(cfg, resolve=True)
    try:  # user mistakes stop here, before Prefect starts or anything is written
        run_cfg = load_config(data)
        if run_cfg.model.name != "mock":  # torch is imported only for real models
            from steertown.inference.model_loading import check_model_config

            check_model_config(run_cfg)
        run, manifest = check_run(run_cfg)
        RunLock(run.path).check()
    except (*USER_ERRORS, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if manifest and manifest.get("status") == "complete":
        print(f"Run {run.run_id} is complete ({manifest['steps']} ticks); nothing to do. "
              "Use overwrite=true or another run_id to run it again.")
        return
    from flows.pipeline import run_flow

    run_flow(data)


if __name__ == "__main__":
    problem = check_overrides(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
