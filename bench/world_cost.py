"""Per-tick cost of the world's prompts against an older run's, side by side in one process.

Usage: python bench/world_cost.py BASE_RUN_DIR WORLD_RUN_DIR [--ticks 4] [--reps 2]

Both run directories must come from the same config (population, seed, events per tick).
Each one's action decisions (system + user prompt, options, alphas, seed) of the first
`--ticks` ticks are replayed as that tick's batch on one real backend, alternating the two
runs rep by rep, so machine load hits both alike. Reflections are left out: both versions
make the same number, the world spreads them over ticks. Prints seconds, prompt and
generated tokens per tick and the world/base ratios.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import duckdb

from flows.compose import compose_run  # sets the offline environment first
from steertown.config import TRAITS
from steertown.config_loading import load_config
from steertown.inference import get_backend
from steertown.inference.backend import GenerationRequest
from steertown.inference.batching import BatchStats, generate_all


def requests_of(run_dir: Path, ticks: int, cfg) -> list[list[GenerationRequest]]:
    """The run's action decisions of ticks 1..ticks as generation requests, per tick."""
    caps = {k: min(v, cfg.inference.max_new_tokens)
            for k, v in cfg.inference.max_new_tokens_by_action.items() if k != "REFLECT"}
    alphas = ", ".join(f"alpha_{t}" for t in TRAITS)
    rows = duckdb.sql(f"""SELECT tick, event_id, system, "user", options, seed, {alphas}
                          FROM '{run_dir}/decisions/*.parquet' WHERE tick <= {ticks}
                          ORDER BY tick, event_id""").fetchall()
    out: list[list[GenerationRequest]] = [[] for _ in range(ticks)]
    for tick, event, system, user, options, seed, *a in rows:
        out[tick - 1].append(GenerationRequest(
            f"a{tick}-{event}", system, user, dict(zip(TRAITS, a, strict=True)),
            cfg.inference.max_new_tokens, seed, "action", caps, True, tuple(options)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("base", type=Path)
    ap.add_argument("world", type=Path)
    ap.add_argument("--ticks", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    data = compose_run("fast", 0, ["model.num_threads=1", "live=false"])
    data.pop("hydra", None)
    cfg = load_config(data)
    backend = get_backend(cfg)
    work = {"base": requests_of(args.base, args.ticks, cfg),
            "world": requests_of(args.world, args.ticks, cfg)}
    totals = {k: {"seconds": 0.0, "tokens_in": 0, "tokens_out": 0} for k in work}
    generate_all(backend, work["base"][0][:2], cfg.optimization.batch_size)  # warm-up
    for rep in range(args.reps):
        for name in (("base", "world") if rep % 2 == 0 else ("world", "base")):
            for batch in work[name]:
                t0 = time.perf_counter()
                got = generate_all(backend, batch, cfg.optimization.batch_size, BatchStats())
                totals[name]["seconds"] += time.perf_counter() - t0
                totals[name]["tokens_in"] += sum(g.tokens_in for g in got)
                totals[name]["tokens_out"] += sum(g.tokens_out for g in got)
    n = args.ticks * args.reps
    for name, t in totals.items():
        print(f"{name}: {t['seconds'] / n:.2f} s/tick, {t['tokens_in'] / n:.0f} prompt tokens, "
              f"{t['tokens_out'] / n:.0f} generated tokens per tick")
    b, w = totals["base"], totals["world"]
    print(f"world/base: time {w['seconds'] / b['seconds']:.3f}, prompt tokens "
          f"{w['tokens_in'] / b['tokens_in']:.3f}, generated tokens "
          f"{w['tokens_out'] / b['tokens_out']:.3f}")


if __name__ == "__main__":
    main()
