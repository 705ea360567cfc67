"""ONNX backend levers side by side on the recorded workload (`bench/run.py --onnx-levers`).

Each lever is a switch on one loaded `OnnxBackend`, so both sides share the session, the
prefix KV cache (warmed first: a run's steady state) and the machine's load. For the
action tick and the reflection tick of bench/workload.json, default and lever alternate
`reps` times (best of each); the ratio is the speed-up of the lever, and the outputs are
compared with the row-by-row ONNX path and with torch float32 (the exactness reference).

- `batched_rest`: the rest of each prompt after the cached prefix in one batched pass
  (inference/onnx_rest_graph.py) instead of one row at a time on the GQA graph;
- `bound_decode`: decode steps on preallocated KV buffers bound as past and present
  (inference/onnx_bound.py) instead of passing and returning the cache as arrays.
"""

from __future__ import annotations

import time
from typing import Any

from bench.workload import Ticks, replay, warm_prefixes
from steertown.config import RunConfig


def _set(backend, lever: str, on: bool) -> None:
    setattr(backend, lever, on)


LEVERS = {"batched_rest": "rest of prompt prefilled in one batched pass (vs row by row)",
          "bound_decode": "decode on shared preallocated KV buffers (IOBinding, no copy per step)"}


def defaults() -> dict[str, bool]:
    """The backend's defaults (OnnxBackend class attributes): each lever is measured on vs
    off with the others at these values."""
    from steertown.inference.onnx_backend import OnnxBackend

    return {lever: bool(getattr(OnnxBackend, lever)) for lever in LEVERS}


def phase_seconds(backend, w: Ticks, bs: int) -> dict[str, float]:
    """Seconds in prefill (`_open`: prefix lookups and the rest of the prompts) and in
    decode steps, for one replay of `w` (the shares say what a prefill lever can gain)."""
    t = {"prefill": 0.0, "decode": 0.0}
    inner = backend._open

    def timed_open(*args):
        t0 = time.perf_counter()
        logits, stepper, state = inner(*args)
        t["prefill"] += time.perf_counter() - t0
        step = stepper.step

        def timed_step(tokens):
            t1 = time.perf_counter()
            try:
                return step(tokens)
            finally:
                t["decode"] += time.perf_counter() - t1
        stepper.step = timed_step
        return logits, stepper, state

    backend._open = timed_open
    try:
        _, total, _ = replay(backend, w, bs)
    finally:
        del backend._open
    t["total"] = total
    return t


def levers(table, cfg: RunConfig, ticks: Ticks, reps: int = 2) -> dict[str, Any]:
    """Every lever on vs off; rows into `table`; identical counts and ratios as a dict."""
    from bench.backends import load_variants

    loaded = load_variants(cfg, ["torch float32", "onnx float32"])
    torch32, onnx = loaded["torch float32"], loaded["onnx float32"]
    reflect = cfg.optimization.reflect_every_n_ticks
    work = {"action tick": [ticks[0]], "reflection tick": [ticks[min(reflect, len(ticks)) - 1]]}
    default = defaults()
    for lever, on in default.items():
        _set(onnx, lever, on)
    for b in (torch32, onnx):
        warm_prefixes(b, work["action tick"] + work["reflection tick"])
    bs = cfg.optimization.batch_size
    facts: dict[str, Any] = {}
    for label, w in work.items():
        n = sum(len(t) for t in w)
        ref, _, _ = replay(torch32, w, bs)
        ph = phase_seconds(onnx, w, bs)
        table.add("onnx phase", f"{label} ({n} req): prefill (default levers, prefix warm)",
                  ph["prefill"], ph["prefill"] / ph["total"], "ratio = share of the tick's model time")
        table.add("onnx phase", f"{label} ({n} req): decode steps", ph["decode"],
                  ph["decode"] / ph["total"], "ratio = share of the tick's model time")
        facts[f"{label}: phases"] = {k: round(v, 3) for k, v in ph.items()}
        for lever, what in LEVERS.items():
            best = {True: float("inf"), False: float("inf")}
            outs: dict[bool, dict[str, str]] = {}
            for _ in range(reps):
                for on in (False, True):
                    _set(onnx, lever, on)
                    out, s, _ = replay(onnx, w, bs)
                    best[on] = min(best[on], s)
                    outs[on] = out
            _set(onnx, lever, default[lever])
            same_off = sum(outs[True][k] == outs[False][k] for k in outs[False])
            same_ref = sum(outs[True][k] == ref[k] for k in ref)
            off_ref = sum(outs[False][k] == ref[k] for k in ref)
            ratio = best[False] / best[True]
            table.add("onnx lever", f"{label} ({n} req): {lever} off", best[False], 1.0,
                      f"{off_ref}/{n} outputs identical to torch float32")
            table.add("onnx lever", f"{label} ({n} req): {lever} on", best[True], ratio,
                      f"ratio = speed-up vs off (best of {reps}, alternated); {what}; "
                      f"{same_off}/{n} identical to off, {same_ref}/{n} to torch float32")
            facts[f"{label}: {lever}"] = {"ratio": round(ratio, 3), "identical_to_off": same_off,
                                          "identical_to_torch_fp32": same_ref, "requests": n}
    return facts
