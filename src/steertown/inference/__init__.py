"""Backends and embedders, loaded once per process and reused (by flows, chunks, workers)."""

from __future__ import annotations

import json
from functools import lru_cache

from steertown.config import RunConfig
from steertown.inference.backend import Backend


def make_backend(cfg: RunConfig) -> Backend:
    """Build the configured backend (loads the model; slow for real models)."""
    if cfg.model.name == "mock":
        from steertown.inference.mock import MockBackend

        return MockBackend(cfg.layers)
    import copy
    from dataclasses import replace

    from steertown.inference.choice import check_backend_available, resolve_model

    # A config built in code (not through load_config) may still say `auto`.
    cfg = resolve_model(copy.deepcopy(cfg))
    check_backend_available(cfg)

    from steertown.inference.sharding import make_sharded, plan_replicas
    from steertown.inference.transformers_backend import TransformersBackend

    if cfg.model.backend == "onnx":
        if cfg.optimization.num_gpus > 1:
            raise ValueError("model.backend=onnx is CPU-only; optimization.num_gpus must be 1")
        from steertown.inference.onnx_backend import OnnxBackend

        return OnnxBackend(cfg)
    if cfg.optimization.num_gpus == 1:
        return TransformersBackend(cfg)
    # Multi-GPU: one replica per GPU; each batch is split across them and merged in order.
    return make_sharded(
        lambda device: TransformersBackend(replace(cfg, model=replace(cfg.model, device=device))),
        plan_replicas(cfg.optimization.num_gpus), policy="balanced")


def backend_key(cfg: RunConfig) -> str:
    """What identifies a loaded backend: model, layers, steering vectors and decoding."""
    d = cfg.to_dict()
    keep = {k: d[k] for k in ("model", "layers", "inference")}
    keep["vectors_dir"] = cfg.steering.vectors_dir
    keep["quant"] = [cfg.optimization.use_quantization, cfg.optimization.max_gpu_memory_gb,
                     cfg.optimization.max_cpu_memory_gb, cfg.optimization.offload_folder]
    return json.dumps(keep, sort_keys=True)


_BACKENDS: dict[str, Backend] = {}


def get_backend(cfg: RunConfig) -> Backend:
    """The process-wide backend for this config: the model loads once per process."""
    key = backend_key(cfg)
    if key not in _BACKENDS:
        _BACKENDS.clear()  # one model at a time: a different model replaces the old one
        _BACKENDS[key] = make_backend(cfg)
    return _BACKENDS[key]


@lru_cache(maxsize=2)
def get_embedder(name: str):
    """The process-wide sentence embedder (`minilm` or `hashing`)."""
    from steertown.inference.embedder import make_embedder

    return make_embedder(name)
