"""A study described by a file: `studies/<name>/study.yaml` -> its cells and their configs.

    name: town-v1                     # default: the folder's name
    arm: fast                         # or arms: [fast, small]
    seeds: [1, 2, 3, 4, 5]
    modes: [vectors, placebo, prompt, "off"]   # conf/steering/<mode>.yaml
    overrides: [steps=40, model.dtype=float32] # Hydra overrides for every cell
    data_dir: storage/studies/town-v1 # run directories, reports, MLflow store, stage state
    results_dir: .                    # results.md, effects.csv...: the study's folder
    verify_args: []                   # extra arguments of `steertown verify` per cell
    forks: {seeds: [1, 2], at: 20, agent: agent-000, trait: E, values: [1.0, -1.0]}

Every cell is composed as `python flows/run.py +arm=<arm> seed=<seed> steering=<mode>
<overrides>` with a fixed, readable run_id (`<name>-<mode>-s<seed>`, plus the arm when
there are several), so re-running the study finds every cell again, and changing the
study's config under a started cell is refused by the run's resume check instead of
silently starting new runs. Relative paths are relative to the project root. Bare `off`
in YAML reads as false; a mode of false is taken as "off".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flows.compose import compose_config, group_options
from flows.environment import PROJECT_ROOT
from steertown.config import TRAITS, ConfigError
from steertown.config_loading import load_config, steering_mode
from steertown.sim.runner import resolve_run_id

STUDY_FILE = "study.yaml"
KEYS = {"name", "arm", "arms", "seeds", "modes", "overrides", "data_dir", "results_dir",
        "verify_args", "forks"}
FORK_DEFAULTS = {"seeds": [], "at": None, "agent": "agent-000", "trait": "E",
                 "values": [1.0, -1.0], "mode": "vectors"}


@dataclass(frozen=True)
class Cell:
    """One run of a study: arm x seed x mode, its run id and its composed config."""

    arm: str
    seed: int
    mode: str | None  # None: the config's own mode (a study without a mode sweep)
    run_id: str
    config: dict = field(compare=False, repr=False)

    @property
    def run_dir(self) -> Path:
        return Path(self.config["storage_dir"]) / self.run_id

    @property
    def steering_mode(self) -> str:
        """The cell's mode: the study's, or its config's when the study sweeps no modes."""
        return self.mode or steering_mode(self.config)

    @property
    def label(self) -> str:
        return f"{self.arm} {self.steering_mode} s{self.seed}"


@dataclass
class StudySpec:
    """What a study runs and where its data and results go."""

    name: str
    arms: list[str]
    seeds: list[int]
    modes: list[str | None]
    overrides: list[str] = field(default_factory=list)
    data_dir: Path | None = None  # None: storage_dir/reports_dir from the overrides
    results_dir: Path | None = None
    verify_args: list[str] = field(default_factory=list)
    forks: dict[str, Any] = field(default_factory=dict)
    fixed_run_ids: bool = True  # False: run ids from arm, seed and config hash (--arms CLI)
    folder: Path | None = None  # the study's folder (None: a study from --arms/--seeds)

    @property
    def state_dir(self) -> Path:
        """Where the stages record what they finished (verification verdicts, logs)."""
        base = self.data_dir or Path(self.cells()[0].config["storage_dir"]).parent
        return base / "study-state" / self.name

    def _data_overrides(self) -> list[str]:
        if self.data_dir is None:
            return []
        d = self.data_dir
        return [f"storage_dir={d / 'dumps'}", f"reports_dir={d / 'reports'}",
                f"tracking.tracking_uri=sqlite:///{d / 'mlflow.db'}"]

    def cell_config(self, arm: str, seed: int, mode: str | None) -> dict:
        """The composed config of one cell (verification off: it is a stage of its own)."""
        base = [f"+arm={arm}", f"seed={seed}", *([f"steering={mode}"] if mode else []),
                "live=false", *self._data_overrides()]
        if self.fixed_run_ids:
            base.append(f"run_id={self.run_id(arm, seed, mode)}")
        # Later values win per key; the study's own overrides come last.
        by_key: dict[str, str] = {}
        for o in [*base, *self.overrides]:
            by_key[o.split("=", 1)[0].lstrip("+~")] = o
        config = compose_config(list(by_key.values()))
        config["verification"]["enabled"] = False  # result-neutral: same run, same id
        return config

    def run_id(self, arm: str, seed: int, mode: str | None) -> str:
        parts = [self.name, *([arm] if len(self.arms) > 1 else []), *([mode] if mode else []),
                 f"s{seed}"]
        return "-".join(parts)

    def cells(self) -> list[Cell]:
        """Every cell, seed-major (all modes of seed 1 first: a stopped study has whole
        seeds to compare)."""
        if not hasattr(self, "_cells"):
            out = []
            for arm in self.arms:
                for seed in self.seeds:
                    for mode in self.modes:
                        cfg = self.cell_config(arm, seed, mode)
                        out.append(Cell(arm, seed, mode, resolve_run_id(load_config(cfg)), cfg))
            ids = [c.run_id for c in out]
            if len(set(ids)) != len(ids):
                raise ConfigError("two cells of the study share a run_id; drop a fixed "
                                  "run_id override")
            self._cells = out
        return self._cells

    def find(self, seed: int, mode: str, arm: str | None = None) -> Cell:
        """The cell of (seed, mode[, arm]); ConfigError naming the allowed ones if none."""
        for c in self.cells():
            if c.seed == seed and c.steering_mode == mode \
                    and (arm is None or c.arm == arm):
                return c
        raise ConfigError(f"--seed/--mode: no cell {seed}/{mode} in study {self.name}; "
                          f"seeds {self.seeds}, modes {self.modes}")


def _list(data: dict, key: str, kind: type, default: Any = None) -> list:
    value = data.get(key, default)
    if value is None:
        raise ConfigError(f"study.yaml: {key}: required")
    if not isinstance(value, list):
        value = [value]
    for v in value:
        if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
            raise ConfigError(f"study.yaml: {key}: expected a list of {kind.__name__}, got {v!r}")
    return value


def _path(value: Any, key: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"study.yaml: {key}: expected a path, got {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_study(study_dir: str | Path, data_dir: str | Path | None = None,
               results_dir: str | Path | None = None) -> StudySpec:
    """Read and check `<study_dir>/study.yaml`; `data_dir`/`results_dir` replace the file's."""
    folder = Path(study_dir)
    path = folder / STUDY_FILE if folder.is_dir() or not folder.suffix else folder
    if not path.is_file():
        raise ConfigError(f"{path}: no study file; a study is a folder with a {STUDY_FILE}")
    folder = path.parent
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {', '.join(sorted(KEYS))}")
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(f"study.yaml: {unknown[0]}: unknown key; allowed: {', '.join(sorted(KEYS))}")
    if "arm" in data and "arms" in data:
        raise ConfigError("study.yaml: arm: give arm or arms, not both")
    arms = _list(data, "arms" if "arms" in data else "arm", str)
    for arm in arms:
        if arm not in group_options("arm"):
            raise ConfigError(f"study.yaml: arm: unknown arm {arm!r}; allowed: "
                              f"{' | '.join(group_options('arm'))}")
    raw_modes = data.get("modes")
    raw_modes = raw_modes if isinstance(raw_modes, list) else [raw_modes]
    modes = [None] if "modes" not in data else ["off" if m is False else m for m in raw_modes]
    for m in modes:
        if m is not None and m not in group_options("steering"):
            raise ConfigError(f"study.yaml: modes: unknown mode {m!r}; allowed: "
                              f"{' | '.join(group_options('steering'))}")
    forks = {**FORK_DEFAULTS, **(data.get("forks") or {})}
    if set(forks) - set(FORK_DEFAULTS) or forks["trait"] not in TRAITS:
        raise ConfigError(f"study.yaml: forks: keys {', '.join(FORK_DEFAULTS)}; trait one of "
                          f"{', '.join(TRAITS)}")
    name = data.get("name", folder.name)
    spec = StudySpec(
        name=str(name), arms=arms, seeds=_list(data, "seeds", int),
        modes=modes, overrides=[str(o) for o in _list(data, "overrides", str, [])],
        data_dir=_path(str(data_dir) if data_dir else data.get("data_dir",
                       f"storage/studies/{name}"), "data_dir", PROJECT_ROOT),
        results_dir=_path(str(results_dir), "results_dir", Path.cwd()) if results_dir
        else _path(data.get("results_dir", "."), "results_dir", folder.resolve()),
        verify_args=[str(a) for a in _list(data, "verify_args", str, [])], forks=forks,
        folder=folder)
    if len(set(spec.seeds)) != len(spec.seeds) or len(set(modes)) != len(modes):
        raise ConfigError("study.yaml: seeds/modes: each value once")
    spec.cells()  # composes every cell: bad overrides stop here, in one line
    return spec
