"""Several GPUs (the guide's future work): replica planning and a sharded backend. No
Prefect, no torch.

Two ways to use several GPUs, which combine:

- **Across runs** (a study): one Dask worker per GPU, each pinned with
  `CUDA_VISIBLE_DEVICES`, so each worker process loads the model once on its own GPU and
  runs whole runs. `gpu_worker_envs` gives the per-worker environments.
- **Within a run** (a big town): `ShardedBackend` puts one model replica per device
  (`plan_replicas`) and splits every batch across the replicas, in threads, merging the
  results back into request order. Requests carry their own steering and sampling seed,
  so a row's output does not depend on its batch neighbours as far as the device's
  kernels are batch-invariant: on CPU in float32 they are (tested); on CUDA nothing here
  is tested and float32 alone does not make kernels batch-invariant (see docs/scaling.md).
  Everything but generation (vectors, hooks, `hidden_at`, `steered`, `prompt_ids`...)
  goes to the first replica: verification and preflight measure one replica.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from steertown.inference.backend import Backend, GenerationRequest, GenerationResult

POLICIES: tuple[str, ...] = ("contiguous", "round_robin", "balanced")


class ShardingError(ValueError):
    """A bad sharding setting; the message is one line."""


def plan_replicas(num_gpus: int, gpu_memory_gb: float | None = None,
                  model_memory_gb: float | None = None, reserve_gb: float = 2.0,
                  max_replicas_per_gpu: int = 1) -> list[str]:
    """Devices to put one model replica on each: `cuda:i` repeated per replica, or `cpu`.

    One replica per GPU by default. With both memory sizes given, a GPU holds as many
    replicas as fit in its memory less `reserve_gb` (activations, KV cache), capped by
    `max_replicas_per_gpu`; a model that does not fit at all is an error.
    """
    if num_gpus < 0:
        raise ShardingError(f"num_gpus: {num_gpus} is out of range; allowed: an integer >= 0")
    if max_replicas_per_gpu < 1:
        raise ShardingError("max_replicas_per_gpu: must be >= 1")
    if num_gpus == 0:
        return ["cpu"]
    per_gpu = max_replicas_per_gpu
    if gpu_memory_gb is not None and model_memory_gb is not None:
        fit = math.floor((gpu_memory_gb - reserve_gb) / model_memory_gb) if model_memory_gb > 0 else per_gpu
        if fit < 1:
            raise ShardingError(
                f"model needs {model_memory_gb:g} GB + {reserve_gb:g} GB reserve; a GPU has "
                f"{gpu_memory_gb:g} GB: use quantization or max_gpu_memory_gb offload")
        per_gpu = min(per_gpu, fit)
    return [f"cuda:{g}" for g in range(num_gpus) for _ in range(per_gpu)]


def gpu_worker_envs(num_gpus: int, workers_per_gpu: int = 1) -> list[dict[str, str]]:
    """Environment of each Dask worker of a study: worker i sees only GPU i // workers_per_gpu.

    Inside the worker that GPU is `cuda:0`, so the run's config needs no device index.
    """
    if num_gpus < 1 or workers_per_gpu < 1:
        raise ShardingError("num_gpus and workers_per_gpu must be >= 1")
    return [{"CUDA_VISIBLE_DEVICES": str(g)} for g in range(num_gpus)
            for _ in range(workers_per_gpu)]


def assign_runs(run_ids: Sequence[str], num_slots: int) -> list[list[str]]:
    """Static round-robin of a study's runs over GPU slots (for schedulers without a queue;
    Dask itself hands the next run to whichever worker is free)."""
    if num_slots < 1:
        raise ShardingError("num_slots must be >= 1")
    return [list(run_ids[i::num_slots]) for i in range(num_slots)]


def split_indices(costs: Sequence[float], num_shards: int,
                  policy: str = "contiguous") -> list[list[int]]:
    """Split rows 0..n-1 (with per-row costs, e.g. prompt tokens) into `num_shards` lists.

    - `contiguous`: consecutive slices of about equal total cost. The batcher sorts a
      batch by prompt length, so each slice stays length-homogeneous (little padding).
    - `round_robin`: row i goes to shard i % n.
    - `balanced`: longest-processing-time first: each row, most costly first, goes to the
      least loaded shard (best balance, mixes lengths).

    Every shard's indices are ascending; together they are a partition of 0..n-1.
    """
    if num_shards < 1:
        raise ShardingError("num_shards must be >= 1")
    if policy not in POLICIES:
        raise ShardingError(f"policy: unknown {policy!r}; allowed: {' | '.join(POLICIES)}")
    n = len(costs)
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    if policy == "round_robin":
        for i in range(n):
            shards[i % num_shards].append(i)
    elif policy == "balanced":
        load = [0.0] * num_shards
        for i in sorted(range(n), key=lambda i: (-costs[i], i)):
            s = min(range(num_shards), key=lambda s: (load[s], s))
            shards[s].append(i)
            load[s] += costs[i]
        for s in shards:
            s.sort()
    else:
        total = float(sum(costs))
        done, s = 0.0, 0
        for i in range(n):
            # move to the next shard once this one holds its share, keeping enough rows
            # for the shards still to fill
            while (s < num_shards - 1 and shards[s]
                   and (done >= total * (s + 1) / num_shards or n - i <= num_shards - 1 - s)):
                s += 1
            shards[s].append(i)
            done += costs[i]
    return shards


def merge_in_order(shards: list[list[int]], results: list[list[Any]], n: int) -> list[Any]:
    """Put each shard's results back at its rows' positions."""
    out: list[Any] = [None] * n
    for idx, res in zip(shards, results, strict=True):
        if len(idx) != len(res):
            raise RuntimeError(f"a replica returned {len(res)} results for {len(idx)} requests")
        for i, r in zip(idx, res, strict=True):
            out[i] = r
    if any(r is None for r in out):
        raise RuntimeError("sharded generation lost rows")
    return out


class ShardedBackend:
    """A Backend over several replica backends (one per device): each batch is split
    across the replicas, generated in parallel threads and merged in request order.

    The replicas must be the same model, vectors and decoding settings on different
    devices; each replica's own lock-free forward passes run concurrently (torch releases
    the GIL in kernels). An exception in any replica (out of memory included) propagates,
    so the batcher's halve-and-retry still works.
    """

    def __init__(self, replicas: Sequence[Backend], policy: str = "contiguous"):
        if not replicas:
            raise ShardingError("ShardedBackend needs at least one replica")
        if policy not in POLICIES:
            raise ShardingError(f"policy: unknown {policy!r}; allowed: {' | '.join(POLICIES)}")
        self.replicas = list(replicas)
        self.policy = policy
        self.name = self.replicas[0].name
        self.layers = list(self.replicas[0].layers)
        self._pool = ThreadPoolExecutor(len(self.replicas), thread_name_prefix="replica")

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not defined here: what verification and preflight
        # read (traits, vectors, tokenizer, model, loaded, device, cfg, hidden_at, steered,
        # prompt_ids, reply_logprobs, ...) comes from the first replica. The replicas are
        # the same weights and vectors, so one replica stands for all of them.
        if name == "replicas":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.replicas[0], name)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return self.replicas[0].count_prompt_tokens(request)

    def describe(self) -> dict:
        d = dict(self.replicas[0].describe())
        d["replicas"] = len(self.replicas)
        d["replica_devices"] = [r.describe().get("device") for r in self.replicas]
        d["shard_policy"] = self.policy
        return d

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        costs = [self.count_prompt_tokens(r) + r.max_new_tokens for r in requests]
        shards = split_indices(costs, len(self.replicas), self.policy)
        jobs = [(rep, idx) for rep, idx in zip(self.replicas, shards, strict=True) if idx]
        futures = [self._pool.submit(rep.generate_batch, [requests[i] for i in idx])
                   for rep, idx in jobs]
        results = [f.result() for f in futures]
        out = merge_in_order([idx for _, idx in jobs], results, len(requests))
        for req, res in zip(requests, out, strict=True):
            if res.request_id != req.request_id:
                raise RuntimeError(f"replica answered {res.request_id} for {req.request_id}")
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def make_sharded(factory: Callable[[str], Backend], devices: Sequence[str],
                 policy: str = "contiguous") -> Backend:
    """Build one replica per device with `factory(device)`; a single device needs no wrapper."""
    replicas = [factory(d) for d in devices]
    return replicas[0] if len(replicas) == 1 else ShardedBackend(replicas, policy)
