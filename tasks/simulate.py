"""Stage 3: simulate one chunk of ticks from its checkpoint; checkpoint at its end."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from steertown.config_loading import load_config
from steertown.inference import get_backend, get_embedder
from steertown.live import open_view
from steertown.sim.runner import run_chunk


@task(name="simulate_chunk", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def simulate_chunk(config: dict, run_dir: str, start: int, end: int) -> list[dict]:
    """Run ticks start+1..end; returns the chunk's per-tick rows (for metrics).

    Retrying is safe: the chunk restarts from the checkpoint at `start` and replaces any
    tick files it had written.
    """
    cfg = load_config(config)
    backend, embedder = get_backend(cfg), get_embedder(cfg.memory.embedder)
    # The flow closes the view after the last chunk: one bar per run, not per chunk.
    view = open_view(Path(run_dir).name, cfg.steps, cfg.population, cfg.live, cfg.color, start)
    rows: list[dict] = []

    def on_tick(result) -> None:
        view.on_tick(result)
        # Society metrics ride along with the tick's row (one row each per tick).
        rows.extend({**s, **t} for t, s in zip(result.ticks, result.society, strict=False))

    run_chunk(cfg, run_dir, start, end, backend, embedder, on_tick)
    return rows
