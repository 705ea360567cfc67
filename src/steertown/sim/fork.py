"""Counterfactual forks: a new run from a parent run's state at tick T, a few keys changed.

`--at T` is the first tick that runs under the changes. The fork's ticks 1..T-1 are the
parent's rows (copied, with the fork's run_id); its state at the start of tick T is the
parent's state after tick T-1: restored from the parent's checkpoint at T-1, or from the
last good one before it and replayed to T-1 with the parent's config, where every
replayed row must equal the parent's (otherwise the fork would not start from the
parent's world, and it is refused). The fork then is an ordinary run directory with a
checkpoint at T-1, so running it is a resume: same seeds, same chunking, same code.

A fork with no change therefore reproduces the parent row for row, and a fork with a
change is identical before T by construction and can differ only from T on.

Only keys that an intervention may change are allowed (the steering of the town, its
length, and keys that never change rows); changing the model, the town's size or the
seed would not continue the parent's world.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from steertown.config import RESULT_NEUTRAL_KEYS, ConfigError, RunConfig, flatten
from steertown.config_loading import load_config
from steertown.inference.backend import Backend
from steertown.inference.choice import check_backend_available, check_same_model
from steertown.sim.checkpoint import load_latest, save_checkpoint
from steertown.sim.engine import Embedder, Simulation
from steertown.sim.runner import prepare_run
from steertown.storage import schema
from steertown.storage.run_dir import RunDir, atomic_write_parquet

# Keys (or key prefixes ending in ".") a fork may change.
FORKABLE = ("steering.mode", "steering.strength", "steering.spread", "steering.coefficients.",
            "steering.agents.", "steps")
# Result-neutral keys a fork may set too (how it is shown and tracked, not what it does).
# Not verification.*: a fork is judged by its parent's thresholds (issue 19).
NEUTRAL_OVERRIDES = tuple(k for k in RESULT_NEUTRAL_KEYS
                          if k not in ("run_id", "storage_dir", "resume", "overwrite", "arm",
                                       "resolved", "verification"))


class ForkError(ConfigError):
    """A fork that cannot be made as asked; the message is one line."""


@dataclass
class ForkPlan:
    """What `create_fork` will do; computed and checked without writing anything."""

    parent_dir: Path
    parent_id: str
    at: int  # first tick under the changes
    run_id: str
    config: dict[str, Any]  # the fork's full config (parent's + overrides)
    changes: dict[str, dict[str, Any]]  # dotted key -> {"from": parent, "to": fork}
    overrides: list[str]  # as typed (recorded as the fork's overrides)

    @property
    def run_dir(self) -> Path:
        return Path(self.config["storage_dir"]) / self.run_id

    def run_config(self) -> RunConfig:
        """The fork's validated config (what it continues with)."""
        return load_config(self.config)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["steering.mode=placebo", "+steering.agents.agent-003.A=0.9"]` -> {key: value}.

    Values are JSON when they parse as JSON (0.9, true, null, [16]), else strings
    (placebo, off); a leading `+` (Hydra's "add a key") is accepted and ignored.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("+")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ForkError(f"override {item!r}: expected key=value, e.g. steering.mode=placebo")
        try:  # numbers, true/false, null and [lists] as JSON; anything else is a string
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw.strip()
    return out


def _check_forkable(key: str) -> None:
    ok = any(key == k.rstrip(".") or (k.endswith(".") and key.startswith(k)) for k in FORKABLE)
    ok = ok or any(key == k or key.startswith(k + ".") for k in NEUTRAL_OVERRIDES)
    if not ok:
        allowed = ", ".join(k + "<...>" if k.endswith(".") else k for k in FORKABLE)
        raise ForkError(f"{key}: cannot change in a fork (the parent's state was made with it); "
                        f"allowed: {allowed}, and {', '.join(NEUTRAL_OVERRIDES)}")


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    node = config
    parts = key.split(".")
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ForkError(f"{key}: {p} is not a mapping")
        node = child
    node[parts[-1]] = value


def _default_run_id(parent_id: str, at: int, overrides: dict[str, Any]) -> str:
    blob = json.dumps(overrides, sort_keys=True, default=str).encode()
    return f"{parent_id}-fork-t{at}-{hashlib.sha256(blob).hexdigest()[:6]}"[:128]


def plan_fork(parent_dir: str | Path, at: int, overrides: list[str],
              run_id: str | None = None) -> ForkPlan:
    """Check a fork request against the parent run; ForkError/ConfigError if it is bad."""
    parent = RunDir(parent_dir).require()
    manifest = parent.read_manifest()
    if "config" not in manifest:
        raise ForkError(f"{parent.path}: has no config in its manifest (an imported run?); "
                        "only steertown runs can be forked")
    parent_cfg = load_config(manifest["config"])
    done = parent.completed_ticks()
    last = done[-1] if done else 0
    if at < 1 or at > last + 1:
        raise ForkError(f"--at: {at} is out of range; allowed: 1..{last + 1} "
                        f"({parent.run_id} has {last} completed ticks)")
    own = manifest.get("fork")
    if own and at < int(own["at"]):
        raise ForkError(f"--at: {at} is before {parent.run_id}'s own fork point {own['at']}; "
                        f"fork its parent {own['parent']} instead")
    values = parse_overrides(overrides)
    config = json.loads(json.dumps(parent_cfg.to_dict()))
    # The fork lives beside its parent unless storage_dir says otherwise.
    config["storage_dir"] = str(parent.path.parent)
    for key, value in values.items():
        _check_forkable(key)
        _set(config, key, value)
    config.update(resume=True, overwrite=False,
                  run_id=run_id or _default_run_id(parent.run_id, at, values))
    cfg = load_config(config)  # validates types, ranges, agent ids, the run_id
    # The parent's resolved backend and dtype are in its config; a parent written before
    # they were resolved (`auto`) is checked against what its model recorded.
    check_backend_available(cfg)
    check_same_model(cfg, manifest.get("model") or {}, f"the parent {parent.run_id}")
    if at > cfg.steps:
        raise ForkError(f"--at: {at} is after the fork's last tick (steps={cfg.steps}); "
                        f"set steps=N with N >= {at}")
    if (Path(cfg.storage_dir) / cfg.run_id).exists():
        raise ForkError(f"--run-id: {cfg.run_id} already exists in {cfg.storage_dir}; "
                        "choose another run id")
    a, b = flatten(parent_cfg.result_dict()), flatten(cfg.result_dict())
    changes = {k: {"from": a.get(k), "to": b.get(k)} for k in sorted(set(a) | set(b))
               if a.get(k) != b.get(k)}
    return ForkPlan(parent.path, parent.run_id, at, cfg.run_id, cfg.to_dict(), changes,
                    list(overrides))


def _comparable(table: str, rows: list[dict]) -> list[dict]:
    """Rows as written to Parquet, without run_id and timings (NaN compared as a marker)."""
    t = pa.Table.from_pylist(rows, schema=schema.TABLES[table])
    keep = [c for c in t.column_names if c != "run_id" and not c.endswith("_seconds")]
    return [{k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in t.select(keep).to_pylist()]


def _parent_rows(parent: RunDir, table: str, tick: int) -> list[dict]:
    return pq.read_table(parent.tick_file(table, tick)).to_pylist()


def _copy_tick(parent: RunDir, fork: RunDir, tick: int) -> None:
    """The parent's files of one tick, with the fork's run_id, into the fork."""
    for table in schema.TABLES:
        src = parent.tick_file(table, tick)
        if not src.is_file():
            raise ForkError(f"{src}: missing; the parent's tick {tick} is incomplete")
        t = pq.read_table(src)
        if "run_id" in t.column_names:
            i = t.column_names.index("run_id")
            t = t.set_column(i, "run_id", pa.array([fork.run_id] * t.num_rows, pa.string()))
        atomic_write_parquet(fork.tick_file(table, tick), t)


def create_fork(plan: ForkPlan, embedder: Embedder, get_backend: Callable[[], Backend],
                project_root: Path = Path(".")) -> dict[str, Any]:
    """Build the fork's run directory (state at the start of tick `plan.at`); return its
    manifest. Run it afterwards like any run with `plan.config` (it resumes at T-1).

    The directory is built under a temporary name and renamed when complete, so a crash
    leaves no half-made fork. `get_backend` is called only if ticks must be replayed.
    """
    parent = RunDir(plan.parent_dir)
    parent_cfg = load_config(parent.read_manifest()["config"])
    cfg = plan.run_config()
    T = plan.at - 1  # noqa: N806 (the state to rebuild: after tick T-1)
    sim = Simulation(parent_cfg, None, embedder, parent.run_id)  # type: ignore[arg-type]
    restored = load_latest(sim, parent, max_tick=T)
    if restored < T:
        sim.backend = get_backend()
    for tick in range(restored + 1, T + 1):
        rows = sim.run_tick(tick).rows()
        for table in schema.TABLES:
            if _comparable(table, rows.get(table, [])) != _comparable(
                    table, _parent_rows(parent, table, tick)):
                raise ForkError(f"replaying {parent.run_id} from its checkpoint at tick "
                                f"{restored} gave other {table} rows at tick {tick} than the "
                                "parent's; it cannot be forked exactly there")
    staging = Path(cfg.storage_dir) / f".forking-{cfg.run_id}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        prepare_run(replace(cfg, storage_dir=str(staging)), project_root)
        fork = RunDir(staging / cfg.run_id)
        for tick in range(1, T + 1):
            _copy_tick(parent, fork, tick)
        if T > 0:
            # The rebuilt state, checkpointed as the fork's own (its config hash and id).
            sim.cfg, sim.run_id = cfg, cfg.run_id
            save_checkpoint(sim, fork, cfg.keep_checkpoints)
        record = {"parent": parent.run_id, "parent_dir": str(parent.path),
                  "parent_config_hash": parent_cfg.config_hash(), "at": plan.at,
                  "changes": plan.changes, "restored_from_checkpoint": restored,
                  "replayed_ticks": T - restored,
                  "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        manifest = fork.update_manifest(config=cfg.to_dict(), ticks_done=T, fork=record,
                                        overrides=plan.overrides)
        target = Path(cfg.storage_dir) / cfg.run_id
        fork.path.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
