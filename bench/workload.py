"""Bench workload: record and replay a seeded fast-arm run's generation requests, and the
measurement helpers (replay, HF generate ceiling, timed simulation ticks, RSS)."""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Any

from flows.compose import compose_run  # sets the offline environment first
from steertown.config import RunConfig
from steertown.config_loading import load_config
from steertown.inference.backend import GenerationRequest
from steertown.inference.batching import BatchStats, generate_all
from steertown.residual import left_pad, pad_id

Ticks = list[list[GenerationRequest]]


# ----- configuration and workload ------------------------------------------------------
def fast_config(overrides: list[str] | None = None, tmp: str | None = None) -> RunConfig:
    """The fast arm exactly as `flows/run.py +arm=fast` composes it, plus `overrides`."""
    over = ["live=false", "tracking.enabled=false", "verification.enabled=false",
            *(overrides or [])]
    if tmp:
        over += [f"storage_dir={tmp}/dumps", f"reports_dir={tmp}/reports"]
    data = compose_run("fast", 0, over)
    data.pop("hydra", None)
    return load_config(data)


def record_workload(cfg: RunConfig, ticks: int, path: Path) -> Ticks:
    """Run `ticks` ticks of a seeded simulation and save every tick's requests to `path`."""
    from steertown.inference import get_backend, get_embedder
    from steertown.sim.engine import Simulation

    backend = get_backend(cfg)
    recorded: Ticks = []
    real = backend.generate_batch

    def recording(batch: list[GenerationRequest]):
        recorded[-1].extend(batch)
        return real(batch)

    sim = Simulation(cfg, backend, get_embedder(cfg.memory.embedder), "bench-record")
    backend.generate_batch = recording  # type: ignore[method-assign]
    try:
        for t in range(1, ticks + 1):
            recorded.append([])
            sim.run_tick(t)
    finally:
        del backend.generate_batch  # back to the class method
    # generate_all sorts by length; store each tick in request-id order (stable replay).
    recorded = [sorted(reqs, key=lambda r: r.request_id) for reqs in recorded]
    path.write_text(json.dumps({
        "about": "generation requests of a seeded fast-arm run (bench/run.py --record)",
        "model": cfg.model.name, "seed": cfg.seed, "population": cfg.population,
        "max_events_per_tick": cfg.max_events_per_tick,
        "ticks": [[dataclasses.asdict(r) for r in reqs] for reqs in recorded]}, indent=1))
    return recorded


def load_workload(path: Path) -> Ticks:
    data = json.loads(path.read_text())
    out = []
    for reqs in data["ticks"]:
        out.append([GenerationRequest(**{**r, "options": tuple(r.get("options", ()))})
                    for r in reqs])
    return out


# ----- measurement helpers ---------------------------------------------------------------
def rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Current resident memory (MB), from /proc (peak RSS never goes down)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss_mb()


def replay(backend, ticks: Ticks, batch_size: int) -> tuple[dict[str, str], float, int]:
    """Generate every tick's requests through the engine's batching: (texts, seconds, tokens)."""
    texts: dict[str, str] = {}
    tokens = 0
    t0 = time.perf_counter()
    for reqs in ticks:
        size = batch_size if batch_size > 0 else max(1, len(reqs))  # 0 = the whole tick
        for g in generate_all(backend, reqs, size, BatchStats()):
            texts[g.request_id] = g.text
            tokens += g.tokens_out
    return texts, time.perf_counter() - t0, tokens


def hf_generate(backend, ticks: Ticks, batch_size: int) -> tuple[float, int]:
    """The ceiling: HF `generate` on the same prompts, greedy, unsteered, fixed length."""
    import torch

    model, tok = backend.model, backend.tokenizer
    seconds, tokens = 0.0, 0
    for reqs in ticks:
        prompts = sorted((backend.prompt_ids(r.system, r.user) for r in reqs), key=len)
        for i in range(0, len(prompts), batch_size):
            ids, mask, _ = left_pad(prompts[i:i + batch_size], pad_id(tok), backend.device)
            n_new = max(r.max_new_tokens for r in reqs)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_new,
                                     min_new_tokens=n_new, do_sample=False,
                                     pad_token_id=pad_id(tok))
            seconds += time.perf_counter() - t0
            tokens += (out.shape[1] - ids.shape[1]) * ids.shape[0]
    return seconds, tokens


def warm_prefixes(backend, ticks: Ticks) -> None:
    """Fill the prefix KV cache for the workload's agents (a run's steady state)."""
    if getattr(backend, "prefix_kv", None) is None:
        return
    seen: dict[tuple, GenerationRequest] = {}
    for reqs in ticks:
        for r in reqs:
            seen.setdefault((r.system, tuple(sorted(r.steering.items()))), r)
    warm = [dataclasses.replace(r, max_new_tokens=1, options=(), token_caps={})
            for r in seen.values()]
    generate_all(backend, warm, 16)


def with_cfg(backend, cfg: RunConfig) -> Any:
    """Point a loaded backend at another config (levers read it at call time)."""
    backend.cfg = cfg
    return backend


def unconstrained(ticks: Ticks) -> Ticks:
    """The workload without adaptive caps and options (every reply may use max tokens)."""
    return [[dataclasses.replace(r, options=(), token_caps={}, stop_at_newline=False)
             for r in reqs] for reqs in ticks]


class TimedEmbedder:
    """Wraps an embedder and accumulates its seconds."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def embed(self, texts: list[str]):
        t0 = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def simulate(cfg: RunConfig, backend, embedder, ticks: int, run_dir: Path,
             checkpoint_every: int = 10, progress=None) -> dict[str, Any]:
    """Whole ticks with per-stage timers; writes parquet ticks and checkpoints like a run.

    `progress(tick, row)` is called after each tick with its timings (for long runs).
    """
    from steertown.sim.checkpoint import save_checkpoint
    from steertown.sim.engine import Simulation
    from steertown.storage.run_dir import RunDir

    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunDir(run_dir)
    emb = TimedEmbedder(embedder)
    sim = Simulation(cfg, backend, emb, run_dir.name)
    emb.seconds = 0.0
    stages = {"model": 0.0, "embedding": 0.0, "tick other": 0.0, "parquet": 0.0,
              "checkpoint": 0.0}
    rss, events, requests, per_tick = [], 0, 0, []
    t_all = time.perf_counter()
    for t in range(1, ticks + 1):
        e0 = emb.seconds
        t_tick = time.perf_counter()
        res = sim.run_tick(t)
        row = res.ticks[0]
        per_tick.append({"tick": t, "seconds": time.perf_counter() - t_tick,
                         "model_seconds": row["model_seconds"], "events": row["events"],
                         "reflections": row["reflections"], "tokens_out": row["tokens_out"]})
        stages["model"] += row["model_seconds"]
        stages["embedding"] += emb.seconds - e0
        stages["tick other"] += row["other_seconds"] - (emb.seconds - e0)
        events += row["events"]
        requests += row["events"] + row["reflections"]
        t0 = time.perf_counter()
        run.write_tick(t, res.rows())
        stages["parquet"] += time.perf_counter() - t0
        if t % checkpoint_every == 0 or t == ticks:
            t0 = time.perf_counter()
            save_checkpoint(sim, run, 3)
            stages["checkpoint"] += time.perf_counter() - t0
        rss.append(current_rss_mb())
        if progress is not None:
            progress(t, per_tick[-1])
    total = time.perf_counter() - t_all
    return {"seconds": total, "stages": stages, "events": events, "requests": requests,
            "rss_mb": rss, "ticks": ticks, "per_tick": per_tick}
