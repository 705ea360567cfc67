"""Compose run configs the way `python flows/run.py` does, without @hydra.main.

`compose_run("fast", 1, ["steps=5"])` is the dict `python flows/run.py +arm=fast seed=1
steps=5` hands to the flow, and `sweep(["fast", "small"], [1, 2], [...])` expands a grid
exactly as `python flows/run.py -m +arm=fast,small seed=1,2 ...` does (Hydra's basic
sweeper, same order, comma values in overrides sweep too), so a study and a Hydra
multirun produce the same runs and run_ids.
"""

from __future__ import annotations

import threading

from flows.environment import PROJECT_ROOT, configure

configure()

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from hydra.errors import HydraException  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from steertown.config import ConfigError  # noqa: E402

CONF = PROJECT_ROOT / "conf"
_LOCK = threading.Lock()  # Hydra's global state: one composition at a time per process


def check_overrides(overrides: list[str]) -> None:
    """Raise ConfigError (one line) for a malformed override or an unknown key/arm/model."""
    from flows.run import check_overrides as check

    problem = check(list(overrides))
    if problem:
        raise ConfigError(problem)


def job_overrides(arm: str, seed: int, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The command-line overrides of one run: `+arm=<arm> seed=<seed> <overrides...>`."""
    return [f"+arm={arm}", f"seed={seed}", *overrides]


def sweep(arms: list[str], seeds: list[int], overrides: list[str] | tuple[str, ...] = ()
          ) -> list[list[str]]:
    """Per-run override lists of the grid arms x seeds x (comma-swept overrides), in
    Hydra multirun order."""
    if not arms or not seeds:
        raise ConfigError("a study needs at least one arm and one seed")
    args = [f"+arm={','.join(arms)}", f"seed={','.join(str(s) for s in seeds)}", *overrides]
    check_overrides(args)
    try:
        parsed = OverridesParser.create().parse_overrides(args)
        (batch,) = BasicSweeper.split_arguments(parsed, None)
    except HydraException as e:
        raise ConfigError(f"malformed override: {str(e).splitlines()[0]}") from None
    return batch


def compose_config(overrides: list[str]) -> dict:
    """The resolved plain dict Hydra composes from conf/config.yaml and `overrides`."""
    check_overrides(overrides)
    with _LOCK, initialize_config_dir(config_dir=str(CONF), version_base="1.3",
                                      job_name="run"):
        try:
            cfg = compose(config_name="config", overrides=list(overrides))
        except HydraException as e:
            raise ConfigError(str(e).splitlines()[0]) from None
    return OmegaConf.to_container(cfg, resolve=True)


def compose_run(arm: str, seed: int, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The config dict of `python flows/run.py +arm=<arm> seed=<seed> <overrides...>`."""
    return compose_config(job_overrides(arm, seed, overrides))
