"""Run lifecycle: create or resume a run directory, simulate chunks, mark it complete.

`prepare_run` decides where a run starts: a new run, a resume from the last good
checkpoint, or nothing to do (complete). `run_chunk` restores the state at its start
from the checkpoint on disk, so every chunk is independently retryable, and ends with
an atomic checkpoint.
"""

from __future__ import annotations

import datetime as dt
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steertown import __version__
from steertown.config import TRAITS, ConfigError, RunConfig, config_diff
from steertown.inference.backend import Backend
from steertown.sim.checkpoint import list_checkpoints, load_latest, save_checkpoint
from steertown.sim.engine import Embedder, Simulation, TickResult
from steertown.storage.run_dir import RunDir, RunDirError
from steertown.world.residents import sample_population


@dataclass
class RunPlan:
    run_id: str
    run_dir: str
    start_tick: int  # ticks already done (restored from a checkpoint)
    steps: int
    complete: bool
    chunks: list[tuple[int, int]]  # (start, end]: ticks start+1..end


def resolve_run_id(cfg: RunConfig) -> str:
    """The explicit run_id, or one derived from arm, seed and config hash (so re-running
    the same command resumes the same run)."""
    return cfg.run_id or f"{cfg.arm}-s{cfg.seed}-{cfg.config_hash()[:8]}"


def git_sha(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "steertown": __version__}
    for pkg in ("torch", "transformers", "prefect", "hydra-core", "mlflow", "duckdb", "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def chunk_bounds(start: int, steps: int, every: int) -> list[tuple[int, int]]:
    """Chunks aligned to multiples of `every`, so a resume lands on the same boundaries."""
    out, t = [], start
    while t < steps:
        end = min(steps, (t // every + 1) * every)
        out.append((t, end))
        t = end
    return out


def check_run(cfg: RunConfig) -> tuple[RunDir, dict | None]:
    """Refuse (ConfigError/RunDirError) what prepare_run would refuse, writing nothing.

    Returns the run directory and its manifest when it exists.
    """
    run = RunDir(Path(cfg.storage_dir) / resolve_run_id(cfg))
    if run.path.exists() and not run.exists() and any(
            p.name != ".lock" for p in run.path.iterdir()):
        raise RunDirError(f"{run.path}: exists but is not a run directory; choose another run_id")
    if not run.exists() or cfg.overwrite:
        return run, None
    m = run.read_manifest()
    if not cfg.resume:
        raise ConfigError(f"run_id: {run.run_id} already exists at {run.path}; pass "
                          "overwrite=true to replace it, resume=true to continue it, or another run_id")
    diff = config_diff(m.get("result_config", {}), cfg.result_dict())
    if diff:
        resolved = [f"{k} ({cfg.resolved[k]})" for k in diff if k in cfg.resolved]
        raise ConfigError(f"config differs from the run being resumed ({run.run_id}) in: "
                          f"{', '.join(diff[:12])}; use overwrite=true or another run_id"
                          + (f"; on this machine {', '.join(resolved)}" if resolved else ""))
    return run, m


def prepare_run(cfg: RunConfig, project_root: Path) -> RunPlan:
    """Create the run directory (or find where to resume) and write the manifest."""
    run, m = check_run(cfg)
    run_id = run.run_id
    if m is not None:
        if m.get("status") == "complete":
            return RunPlan(run_id, str(run.path), cfg.steps, cfg.steps, True, [])
        start = _last_checkpoint_tick(run)
        return RunPlan(run_id, str(run.path), start, cfg.steps, False,
                       chunk_bounds(start, cfg.steps, cfg.checkpoint_every))
    if cfg.overwrite and run.path.exists():
        for child in run.path.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    run.path.mkdir(parents=True, exist_ok=True)
    manifest = {
        "run_id": run_id, "arm": cfg.arm, "config": cfg.to_dict(),
        "result_config": cfg.result_dict(), "config_hash": cfg.config_hash(),
        "status": "running", "steps": cfg.steps, "ticks_done": 0,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": _versions(), "git_sha": git_sha(project_root), "host": platform.node(),
    }
    agents = sample_population(cfg)
    run.write_agents([{"run_id": run_id, "agent_id": a.agent_id, "name": a.name, "home": a.home,
                       "goal": a.goal, **{t: a.traits[t] for t in TRAITS}} for a in agents])
    run.write_manifest(manifest)  # last: a manifest marks a run directory as complete to use
    return RunPlan(run_id, str(run.path), 0, cfg.steps, False,
                   chunk_bounds(0, cfg.steps, cfg.checkpoint_every))


def _last_checkpoint_tick(run: RunDir) -> int:
    ckpts = list_checkpoints(run)
    return int(ckpts[-1].stem.rsplit("_t", 1)[1]) if ckpts else 0


def run_chunk(cfg: RunConfig, run_dir: str | Path, start: int, end: int, backend: Backend,
              embedder: Embedder, on_tick: Callable[[TickResult], None] | None = None) -> dict:
    """Simulate ticks start+1..end from the checkpoint at `start`, then checkpoint.

    If that checkpoint is bad, the newest good earlier one is used and the missing
    ticks are replayed; tick files after the restored tick are replaced, not duplicated.
    """
    run = RunDir(run_dir)
    sim = Simulation(cfg, backend, embedder, run.run_id)
    restored = load_latest(sim, run, max_tick=start)
    run.remove_ticks_after(restored)
    totals = {"ticks": 0, "events": 0, "tokens_out": 0, "seconds": 0.0, "restored_from": restored}
    for tick in range(restored + 1, end + 1):
        result = sim.run_tick(tick)
        run.write_tick(tick, result.rows())
        row = result.ticks[0]
        totals["ticks"] += 1
        totals["events"] += row["events"]
        totals["tokens_out"] += row["tokens_out"]
        totals["seconds"] += row["tick_seconds"]
        if on_tick is not None:
            on_tick(result)
    save_checkpoint(sim, run, cfg.keep_checkpoints)
    run.update_manifest(ticks_done=end)
    return totals


def finish_run(run_dir: str | Path, **fields) -> None:
    """Mark a run complete (after the last chunk)."""
    RunDir(run_dir).update_manifest(
        status="complete", finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **fields)
