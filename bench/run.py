"""steertown benchmark: `make bench` (quick, a few minutes), `make bench ARGS=--full`.

On request: `ARGS=--backends` (torch fp32 / torch bf16 / ONNX side by side on the recorded
action and reflection ticks), `ARGS=--onnx-levers` (each ONNX lever on vs off, see
bench/onnx_levers.py), `ARGS=--processes` (two 1-thread runs at once vs one all-core run,
bench/processes.py), `ARGS=--mock-scale` (10,000 mock agents x 100 ticks and the report,
bench/mock_scale.py), `ARGS="--identity --ticks 12"` (torch float32 vs ONNX on the same
fast-arm ticks, bench/identity.py), `ARGS="--full-arm --backend onnx"` (the whole fast arm end to
end; see bench/backends.py) and `ARGS="--verify-cost RUN_DIR"` (verify's decision re-scoring,
previous vs current scorer, bench/verify_cost.py). Each writes its own block of
bench/RESULTS.md.

A fixed workload (the generation requests of a few ticks of a seeded fast-arm run,
recorded once to bench/workload.json with `--record`) is replayed through:

1. the model's own ceiling: HF `model.generate` on the same prompts, batched, greedy,
   no steering, no per-row logic;
2. the engine's batching with batch size 1 (the sequential loop);
3. the engine's batching (length-sorted batches of `optimization.batch_size`);
4. each lever on/off: prefix KV cache, adaptive tokens/options, dtype, threads, batch size;
5. scaling series: events per tick (real model, whole ticks) and population (mock backend).

It also runs whole ticks of the simulation with per-stage timers (model, embedding,
everything else in the tick, parquet writes, checkpoints). All comparisons run side by
side in one process, so machine load affects both sides alike: read ratios, not seconds.
Results: a table on stdout and bench/RESULTS.md (the measured part between markers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.blocks import (  # noqa: E402
    run_backends,
    run_full_arm,
    run_identity,
    run_mock_scale,
    run_onnx_levers,
    run_processes,
    run_verify_cost,
)
from bench.report import BEGIN, END, Table, machine, write_block, write_results  # noqa: E402,F401
from bench.workload import (  # noqa: E402  (sets the offline environment first)
    Ticks,
    fast_config,
    hf_generate,
    load_workload,
    record_workload,
    replay,
    simulate,
    unconstrained,
    warm_prefixes,
    with_cfg,
)
from steertown.config import RunConfig  # noqa: E402

WORKLOAD = ROOT / "bench" / "workload.json"
RESULTS = ROOT / "bench" / "RESULTS.md"


def same(a: dict[str, str], b: dict[str, str]) -> str:
    n = sum(a[k] == b.get(k) for k in a)
    return f"{n}/{len(a)} outputs identical"


def batched_vs_sequential(backend, ticks: Ticks, batch_size: int, reps: int = 1) -> dict[str, Any]:
    """The exactness check: every request alone (batch size 1) vs in batches, same requests.

    Alternated and repeated, best time of each: load that comes and goes hits both sides.
    `identical` counts requests whose text is the same both ways.
    """
    t_s = t_b = float("inf")
    for _ in range(reps):
        seq, t, _ = replay(backend, ticks, 1)
        t_s = min(t_s, t)
        bat, t, _ = replay(backend, ticks, batch_size)
        t_b = min(t_b, t)
    return {"requests": len(seq), "identical": sum(seq[k] == bat.get(k) for k in seq),
            "seq_seconds": t_s, "batched_seconds": t_b, "sequential": seq, "batched": bat}


def bench_replay(table: Table, backend, cfg: RunConfig, ticks: Ticks, seq_ticks: Ticks,
                 lever_ticks: Ticks, full: bool, real: bool) -> dict[str, Any]:
    """Sections 1-4 on the recorded workload. Returns the exactness facts for callers."""
    n_req = sum(len(t) for t in ticks)
    warm_prefixes(backend, ticks + lever_ticks)
    # (3) batched, and (2) sequential on the sequential subset, side by side.
    batched, t_b, tok_b = replay(backend, ticks, cfg.optimization.batch_size)
    table.add("engine", f"batched (bs {cfg.optimization.batch_size}), {n_req} requests", t_b, 1.0,
              f"{tok_b} tokens, {tok_b / t_b:.1f} tok/s")
    check = batched_vs_sequential(backend, seq_ticks, cfg.optimization.batch_size,
                                  2 if real else 1)
    exact = check["identical"] == check["requests"]
    table.add("engine", f"sequential (bs 1), {check['requests']} requests", check["seq_seconds"],
              check["seq_seconds"] / check["batched_seconds"],
              f"ratio = seq/batched (best of alternated runs), same requests; "
              f"{check['identical']}/{check['requests']} outputs identical")
    facts: dict[str, Any] = {"batched_equals_sequential": exact, "batched": batched}
    if real:
        # (1) the model's ceiling.
        t_hf, tok_hf = hf_generate(backend, ticks, cfg.optimization.batch_size)
        table.add("ceiling", "HF generate, greedy, unsteered, max tokens", t_hf, t_hf / t_b,
                  f"{tok_hf} tokens, {tok_hf / t_hf:.1f} tok/s (ratio = its time / engine's)")
    # (4) levers: each A/B pair alternates default and lever `reps` times on the lever
    # workload and keeps the best of each side, so load that comes and goes hits both.
    bs = cfg.optimization.batch_size
    reps = 2 if real else 1
    lev_n = sum(len(t) for t in lever_ticks)

    def ab(name: str, lever: Callable[[], tuple[dict[str, str], float, int]],
           note: Callable[[dict[str, str], int, int], str]) -> None:
        best_d = best_l = float("inf")
        for _ in range(reps):
            d_out, t, d_tok = replay(backend, lever_ticks, bs)
            facts["lever_default_out"] = d_out
            best_d = min(best_d, t)
            l_out, t, l_tok = lever()
            best_l = min(best_l, t)
        table.add("lever", f"{name} ({lev_n} req)", best_l, best_l / best_d,
                  "ratio = lever/default; " + note(l_out, l_tok, d_tok))

    def with_changes(section: str, **changes: Any) -> Callable[[], tuple]:
        def run() -> tuple[dict[str, str], float, int]:
            sub = dataclasses.replace(getattr(cfg, section), **changes)
            with_cfg(backend, dataclasses.replace(cfg, **{section: sub}))
            try:
                return replay(backend, lever_ticks, bs)
            finally:
                with_cfg(backend, cfg)
        return run

    def diff(o: dict[str, str], _t: int, _d: int) -> str:
        return same(facts["lever_default_out"], o)

    ab("prefix KV cache off (default on, warm)", with_changes("optimization", prefix_cache=False),
       diff)
    if real:
        def all_logits() -> tuple[dict[str, str], float, int]:
            backend.last_logits_only = False
            try:
                return replay(backend, lever_ticks, bs)
            finally:
                backend.last_logits_only = True
        ab("prefill LM head on every position (default: last only)", all_logits, diff)

    def no_adaptive() -> tuple[dict[str, str], float, int]:
        with_cfg(backend, dataclasses.replace(
            cfg, inference=dataclasses.replace(cfg.inference, adaptive_tokens=False)))
        try:
            return replay(backend, unconstrained(lever_ticks), bs)
        finally:
            with_cfg(backend, cfg)
    ab("adaptive tokens + options off", no_adaptive,
       lambda o, t, d: f"{t} tokens vs {d}")
    for size in ((4, 8, 32, 0) if full else (8, 0)):
        ab(f"batch size {size or 'whole tick'} (default {bs})",
           lambda size=size: replay(backend, lever_ticks, size), diff)
    if real:
        base_t = None
        for n, policy in ((1, None), (2, None), (2, "PASSIVE")):
            t_n = threads_probe(n, policy, cfg.model.name)
            base_t = base_t or t_n
            table.add("lever", f"threads {n}, OMP_WAIT_POLICY {policy or 'unset'} (subprocess)",
                      t_n, t_n / base_t, f"6 requests x 12 tokens, best of 2; load avg "
                      f"{os.getloadavg()[0]:.1f}; ratio vs 1 thread")
        if full or os.environ.get("BENCH_BF16", "1") == "1":
            from steertown.inference.transformers_backend import TransformersBackend

            bcfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="bfloat16"))
            bf = TransformersBackend(bcfg)
            warm_prefixes(bf, lever_ticks)
            ab("dtype bfloat16 (default float32)", lambda: replay(bf, lever_ticks, bs), diff)
            del bf
    return facts


def threads_probe(n: int, policy: str | None, model: str) -> float:
    """Seconds for a small fixed generation in a fresh process with `n` torch threads.

    A subprocess because OpenMP reads OMP_WAIT_POLICY once, when torch loads.
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, __file__, "--threads-child", str(n), "--model", model],
                         env=env, capture_output=True, text=True, timeout=900, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def threads_child(n: int, model: str | None) -> None:
    """The body of `threads_probe`: prints the best of two timed replays."""
    cfg = fast_config([f"model.num_threads={n}"] + ([f"model={model}"] if model else []))
    from steertown.inference import get_backend

    backend = get_backend(cfg)
    ticks = [[dataclasses.replace(r, max_new_tokens=12) for r in load_workload(WORKLOAD)[0][:6]]]
    warm_prefixes(backend, ticks)
    print(min(replay(backend, ticks, 16)[1] for _ in range(2)))


def bench_ticks(table: Table, cfg: RunConfig, backend, embedder, n_ticks: int,
                tmp: Path) -> dict[str, Any]:
    """Whole ticks with per-stage times (share of the tick)."""
    r = simulate(cfg, backend, embedder, n_ticks, tmp / "ticks")
    total = r["seconds"]
    table.add("ticks", f"{n_ticks} ticks, {r['requests']} requests, end to end", total, 1.0,
              f"{total / n_ticks:.2f} s/tick")
    for name, s in r["stages"].items():
        table.add("stage", name, s, s / total, "ratio = share of the ticks' time")
    rss = r["rss_mb"]
    table.add("memory", "RSS first tick -> last tick (MB)", None, None,
              f"{rss[0]:.0f} -> {rss[-1]:.0f}")
    return r


def bench_scaling(table: Table, cfg_for: Callable[[list[str]], RunConfig], backend_for,
                  embedder_for, events: tuple[int, ...], pops: tuple[int, ...],
                  n_ticks: int, pop_ticks: int, tmp: Path) -> None:
    """(5) events per tick with the configured backend, population with the mock backend."""
    base = None
    for e in events:
        cfg = cfg_for([f"max_events_per_tick={e}", "optimization.reflect_every_n_ticks=1000"])
        r = simulate(cfg, backend_for(cfg), embedder_for(cfg), n_ticks, tmp / f"ev{e}")
        per_event = r["seconds"] / max(1, r["events"])
        base = base or per_event
        table.add("scale", f"events/tick {e}: {n_ticks} ticks", r["seconds"], per_event / base,
                  f"{per_event:.3f} s/event (ratio = per-event cost vs first)")
    base = None
    for p in pops:
        cfg = cfg_for([f"population={p}", "model=mock", "memory.embedder=hashing"])
        r = simulate(cfg, backend_for(cfg), embedder_for(cfg), pop_ticks, tmp / f"pop{p}")
        per_tick = r["seconds"] / pop_ticks
        base = base or per_tick
        rss = r["rss_mb"]
        table.add("scale", f"mock population {p}: {pop_ticks} ticks", r["seconds"],
                  per_tick / base, f"{per_tick * 1000:.1f} ms/tick; RSS {rss[0]:.0f}->"
                  f"{rss[-1]:.0f} MB")


def run_bench(mode: str = "quick", model: str | None = None, workload: Path = WORKLOAD,
              results: Path | None = RESULTS, record_ticks: int = 5,
              overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; `mode` is tiny (tests), quick (default) or full."""
    from steertown.inference import get_backend, get_embedder

    full, tiny = mode == "full", mode == "tiny"
    tmp = Path(tempfile.mkdtemp(prefix="steertown-bench-"))
    base_over = ([f"model={model}"] if model else []) + list(overrides or [])
    if tiny:
        base_over += ["memory.embedder=hashing"]

    def cfg_for(extra: list[str]) -> RunConfig:
        return fast_config(base_over + extra, str(tmp))

    cfg = cfg_for([])
    real = cfg.model.name != "mock"
    info = machine()
    print(f"steertown bench ({mode}): {cfg.model.name}, {info['cpu']}, nproc {info['nproc']}, "
          f"load {info['load_avg_1_5_15']}", flush=True)
    table = Table()
    t_load = time.perf_counter()
    backend = get_backend(cfg)
    embedder = get_embedder(cfg.memory.embedder)
    if real:
        import torch

        info["torch_threads"] = str(torch.get_num_threads())  # after model.num_threads applies
    table.add("setup", f"load {cfg.model.name} + {cfg.memory.embedder}",
              time.perf_counter() - t_load)
    if tiny:
        workload = tmp / "workload.json"  # never replace the committed real-model workload
    if not workload.exists() or json.loads(workload.read_text()).get("model") != cfg.model.name:
        print(f"recording {record_ticks} ticks to {workload}", flush=True)
        ticks = record_workload(cfg, record_ticks, workload)
    else:
        ticks = load_workload(workload)
    # Quick: the first action tick and the first reflection tick; full: every tick.
    reflect = cfg.optimization.reflect_every_n_ticks
    chosen = ticks if (full or tiny) else [ticks[0], ticks[min(reflect, len(ticks)) - 1]]
    seq_ticks = chosen if (full or tiny) else [ticks[0]]
    # Levers (A/B, repeated) on a smaller mix in quick mode: a tick's 12 actions + 12
    # of its reflections.
    lever_ticks = chosen if (full or tiny) else [ticks[min(reflect, len(ticks)) - 1][:24]]
    facts = bench_replay(table, backend, cfg, chosen, seq_ticks, lever_ticks, full, real)
    n_ticks = 2 if tiny else (10 if full else 5)
    sim = bench_ticks(table, cfg, backend, embedder, n_ticks, tmp)
    if tiny:
        bench_scaling(table, cfg_for, get_backend, lambda c: get_embedder(c.memory.embedder),
                      (2, 4), (8, 16), 2, 2, tmp)
    else:
        bench_scaling(table, cfg_for, get_backend, lambda c: get_embedder(c.memory.embedder),
                      (4, 12, 32) if full else (4, 12), (32, 100, 1000),
                      3 if full else 2, 100 if full else 20, tmp)
    out = {"mode": mode, "machine": info, "rows": table.rows, "markdown": table.markdown(),
           "batched_equals_sequential": facts["batched_equals_sequential"],
           "sim": {k: v for k, v in sim.items() if k != "rss_mb"}}
    if results is not None:
        write_results(results, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="every measurement (tens of minutes)")
    g.add_argument("--tiny", action="store_true", help="mock backend, seconds (tests)")
    g.add_argument("--backends", action="store_true",
                   help="torch fp32 vs torch bf16 vs onnx on the recorded action/reflection ticks")
    g.add_argument("--onnx-levers", action="store_true",
                   help="each ONNX backend lever on vs off on the recorded ticks")
    g.add_argument("--processes", action="store_true",
                   help="two 1-thread runs at once vs one all-core run after another")
    g.add_argument("--identity", action="store_true",
                   help="--ticks fast-arm ticks on torch float32 vs ONNX, message by message")
    g.add_argument("--mock-scale", action="store_true",
                   help="10,000 agents x 100 ticks on the mock backend, report rendered")
    g.add_argument("--full-arm", action="store_true",
                   help="the whole fast arm (200 ticks) end to end on --backend (long)")
    g.add_argument("--verify-cost", type=Path, default=None, metavar="RUN_DIR",
                   help="verify's decision re-scoring on RUN_DIR's sampled decisions: "
                        "previous vs current scorer, outputs compared")
    p.add_argument("--decisions", type=int, default=16,
                   help="sampled decisions re-scored per arm for --verify-cost")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="model.backend for --full-arm (default auto, as a run)")
    p.add_argument("--ticks", type=int, default=5,
                   help="ticks per run for --processes and --identity")
    p.add_argument("--dtype", default=None, help="model.dtype for --full-arm (default: auto)")
    p.add_argument("--model", default=None, help="model config group (default: the arm's)")
    p.add_argument("--record", type=int, default=0, metavar="TICKS",
                   help="re-record the workload from TICKS ticks of a seeded run first")
    p.add_argument("--workload", type=Path, default=WORKLOAD)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every measurement (e.g. model.num_threads=1)")
    p.add_argument("--no-write", action="store_true", help="don't update bench/RESULTS.md")
    p.add_argument("--threads-child", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads_child:
        threads_child(args.threads_child, args.model)
        return 0
    if args.backends:
        return run_backends(args)
    if args.full_arm:
        return run_full_arm(args)
    if args.onnx_levers:
        return run_onnx_levers(args)
    if args.processes:
        return run_processes(args)
    if args.mock_scale:
        return run_mock_scale(args)
    if args.identity:
        return run_identity(args)
    if args.verify_cost:
        return run_verify_cost(args)
    if args.record:
        args.workload.unlink(missing_ok=True)
    mode = "full" if args.full else "tiny" if args.tiny else "quick"
    model = "mock" if args.tiny and not args.model else args.model
    out = run_bench(mode, model, args.workload, None if args.no_write else RESULTS,
                    args.record or 5, args.set)
    print(out["markdown"])
    return 0 if out["batched_equals_sequential"] else 1


if __name__ == "__main__":
    sys.exit(main())
