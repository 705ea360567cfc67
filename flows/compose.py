"""Compose run configs the way `python flows/run.py` does, without @hydra.main.

`compose_run("fast", 1, ["steps=5"])` is the dict `python flows/run.py +arm=fast seed=1
steps=5` hands to the flow, and `sweep(["fast", "small"], [1, 2], [...])` expands a grid
exactly as `python flows/run.py -m +arm=fast,small seed=1,2 ...` does (Hydra's basic
sweeper, same order, comma values in overrides sweep too), so a study and a Hydra
multirun produce the same runs and run_ids.
"""

from __future__ import annotations

import threading
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from flows.environment import PROJECT_ROOT
from steertown.config import ConfigError

CONF = PROJECT_ROOT / "conf"
_LOCK = threading.Lock()  # Hydra's global state: one composition at a time per process


def group_options(group: str, conf: Path = CONF) -> list[str]:
    """The options of a config group: the YAML files in conf/<group>/ (arm, model, steering)."""
    return sorted(p.stem for p in (conf / group).glob("*.yaml"))


def default_groups(conf: Path = CONF) -> set[str]:
    """The config groups conf/config.yaml's defaults list already holds (`model`): those
    are replaced with `group=option`; the others (`arm`) are added with `+group=option`."""
    import yaml

    try:
        defaults = yaml.safe_load((conf / "config.yaml").read_text()).get("defaults") or []
    except (OSError, AttributeError, yaml.YAMLError):
        return set()
    return {k for d in defaults if isinstance(d, dict) for k in d}


def config_groups(conf: Path = CONF) -> list[str]:
    """The config groups: the folders of conf/ that hold YAML files (arm, model, steering)."""
    return sorted(d.name for d in conf.iterdir() if d.is_dir() and any(d.glob("*.yaml")))


def hydra_overrides(argv: list[str]) -> tuple[list[str], Path]:
    """The key=value overrides of a `flows/run.py` command line and its config dir.

    Hydra's own flags (`--cfg job`, `--info defaults`, `-cn x`, `-m`...) are split off by
    Hydra's own argument parser, so they reach Hydra untouched. With `-sc` (shell
    completion) the positional words are completion commands (`install=bash`), not
    overrides: none are returned.
    """
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:  # Hydra will print its own usage error for this command line
        return [], CONF
    if args.shell_completion:
        return [], CONF
    conf = Path(args.config_dir or (PROJECT_ROOT / "flows" / args.config_path
                                    if args.config_path else CONF))
    return list(args.overrides), conf


def override_problem(overrides: list[str], conf: Path = CONF) -> str | None:
    """One-line message for a malformed override or an unknown key/arm/model, else None.

    Hydra's own errors for these are multi-line; users get one line and exit code 2.
    Arms, models and steering modes are whatever `conf/<group>/*.yaml` hold.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        return f"malformed override: {str(e).splitlines()[0]}"
    from steertown.config import RunConfig, flatten

    known = set(flatten(RunConfig().to_dict()))
    in_defaults = default_groups(conf)
    for o in parsed:
        group = o.key_or_group
        groups = config_groups(conf)
        if group in groups and group not in in_defaults and not (
                o.is_add() or o.is_force_add() or o.is_delete()):
            # Hydra says "Could not override 'arm'. No match in the defaults list." in 3 lines
            return (f"{group}: write +{o.input_line} (the + adds the "
                    f"{group} group; it has no default to replace)")
        if group not in groups:
            if not (group.startswith("hydra") or o.is_add() or group in known
                    or any(k.startswith(group + ".") or group.startswith(k + ".")
                           for k in known)):
                if group.startswith("steering.agents."):  # a mapping Hydra cannot extend
                    return f"{group}: per-agent coefficients are new keys; write +{group}=VALUE"
                return f"{group}: unknown key; see conf/config.yaml for the keys"
            continue
        values = o.value()
        values = [values] if isinstance(values, str) else list(getattr(values, "list", values))
        options = group_options(group, conf)
        for v in values:
            if str(v) not in options:
                return (f"{group}: unknown {group} {v!r}; allowed: {' | '.join(options)} "
                        f"(the files in {conf / group})")
    return None


def check_overrides(overrides: list[str]) -> None:
    """Raise ConfigError (one line) for a malformed override or an unknown key/arm/model."""
    problem = override_problem(list(overrides))
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
