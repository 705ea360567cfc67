"""Backends side by side on the recorded workload, and the full fast arm end to end.

`bench/run.py --backends`: one action tick and one reflection tick of bench/workload.json
through torch float32 (today's reference), torch bfloat16 and ONNX Runtime float32, in
one process, alternated and repeated (best of each), as speed ratios against torch
float32, with how many outputs are identical to torch float32's.

`bench/run.py --full-arm --backend onnx`: the guide's whole fast arm (32 agents, 200
ticks, 12 events per tick, reflect every 5, 48 tokens) as `simulate` runs it (model
loaded first and excluded; parquet and checkpoints included), with wall time, per-stage
shares, action-tick and reflection-tick means and tokens/s.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.workload import Ticks, replay, simulate, warm_prefixes
from steertown.config import RunConfig

# name -> (model.backend, model.dtype)
VARIANTS = {"torch float32": ("torch", "float32"), "torch bfloat16": ("torch", "bfloat16"),
            "onnx float32": ("onnx", "float32")}


def with_model(cfg: RunConfig, backend: str, dtype: str) -> RunConfig:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backend=backend,
                                                              dtype=dtype))


def load_variants(cfg: RunConfig, names: list[str]) -> dict[str, Any]:
    """One backend per variant; the ONNX one reuses torch float32 as its reference."""
    from steertown.inference.onnx_backend import OnnxBackend
    from steertown.inference.transformers_backend import TransformersBackend

    out: dict[str, Any] = {}
    for name in names:
        kind, dtype = VARIANTS[name]
        vcfg = with_model(cfg, kind, dtype)
        if kind == "onnx":
            ref = out.get("torch float32")
            out[name] = OnnxBackend(vcfg, reference=ref)
        else:
            out[name] = TransformersBackend(vcfg)
    return out


def compare(table, cfg: RunConfig, ticks: Ticks, reps: int = 2,
            names: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Action tick and reflection tick per backend: speed vs torch float32, same outputs."""
    names = names or list(VARIANTS)
    backends = load_variants(cfg, names)
    reflect = cfg.optimization.reflect_every_n_ticks
    work = {"action tick": [ticks[0]], "reflection tick": [ticks[min(reflect, len(ticks)) - 1]]}
    bs = cfg.optimization.batch_size
    facts: dict[str, dict[str, float]] = {}
    for b in backends.values():
        warm_prefixes(b, work["action tick"] + work["reflection tick"])  # a run's steady state
    for label, w in work.items():
        n = sum(len(t) for t in w)
        best: dict[str, float] = {}
        outs: dict[str, tuple[dict[str, str], int]] = {}
        for _ in range(reps):  # alternated: load that comes and goes hits every side
            for name, b in backends.items():
                out, s, tok = replay(b, w, bs)
                best[name] = min(best.get(name, float("inf")), s)
                outs[name] = (out, tok)
        base = best[names[0]]
        ref_out = outs[names[0]][0]
        for name in names:
            out, tok = outs[name]
            same = sum(out[k] == ref_out[k] for k in ref_out)
            table.add("backend", f"{label} ({n} req): {name}", best[name], base / best[name],
                      f"ratio = speed-up vs {names[0]} (best of {reps}, alternated); "
                      f"{same}/{n} outputs identical to {names[0]}; {tok} tokens, "
                      f"{tok / best[name]:.1f} tok/s")
            facts.setdefault(name, {})[label] = base / best[name]
    return facts


def full_arm(table, cfg: RunConfig, backend, label: str) -> dict[str, Any]:
    """The whole configured run (cfg.steps ticks) end to end, with a progress line per 10 ticks."""
    tmp = Path(tempfile.mkdtemp(prefix="steertown-fullarm-"))
    from steertown.inference import get_embedder

    t0 = time.perf_counter()

    def progress(tick: int, row: dict[str, Any]) -> None:
        if tick % 10 == 0 or tick == cfg.steps:
            print(f"  full arm {label}: tick {tick}/{cfg.steps}, {time.perf_counter() - t0:.0f} s "
                  f"so far, last tick {row['seconds']:.1f} s", flush=True)

    r = simulate(cfg, backend, get_embedder(cfg.memory.embedder), cfg.steps, tmp / "run",
                 progress=progress)
    ticks = r["per_tick"]
    act = [t["seconds"] for t in ticks if t["reflections"] == 0]
    ref = [t["seconds"] for t in ticks if t["reflections"] > 0]
    tokens = sum(t["tokens_out"] for t in ticks)
    total = r["seconds"]
    table.add("full arm", f"{label}: {cfg.steps} ticks, {r['requests']} requests, end to end",
              total, None, f"{total / 60:.1f} min; {tokens} message tokens out, "
              f"{tokens / total:.1f} tok/s")
    table.add("full arm", f"{label}: action tick mean ({len(act)})", sum(act) / max(1, len(act)))
    table.add("full arm", f"{label}: reflection tick mean ({len(ref)})",
              sum(ref) / max(1, len(ref)))
    for name, s in r["stages"].items():
        table.add("full arm", f"{label}: stage {name}", s, s / total, "ratio = share of the run")
    return {"seconds": total, "ticks": len(ticks), "tokens_out": tokens,
            "action_tick_mean": sum(act) / max(1, len(act)),
            "reflection_tick_mean": sum(ref) / max(1, len(ref)), "run_dir": str(tmp / "run")}
