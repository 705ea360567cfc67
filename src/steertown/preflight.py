"""Preflight diagnostics: the guide's slowdown checklist, run automatically at load time.

The guide's "Troubleshooting 70-hour slowdown" asks a user to check by hand whether the
model silently sits on the CPU, whether the machine swaps, whether the model loads
once, and whether agents reflect every tick. `preflight(cfg, backend)` answers each
question from the live process and returns findings with a status (`ok` | `warn`), a
detail and, for warnings, the fix. Pure library: no orchestration imports.
"""

from __future__ import annotations

from typing import Any

import psutil

from steertown.config import RunConfig

GIB = 1024 ** 3


def _finding(check: str, status: str, detail: str, fix: str = "") -> dict[str, str]:
    return {"check": check, "status": status, "detail": detail, "fix": fix}


def _device_checks(cfg: RunConfig, backend: Any) -> list[dict[str, str]]:
    import torch

    cuda = torch.cuda.is_available()
    loaded = getattr(backend, "loaded", None)
    if loaded is None:  # mock backend or no backend yet: report the configuration only
        return [_finding("device", "ok", f"no model loaded ({getattr(backend, 'name', 'none')}); "
                         f"model.device={cfg.model.device}, CUDA GPU {'present' if cuda else 'absent'}")]
    detail = f"model on {loaded.device}, dtype {loaded.dtype}"
    if cuda and not loaded.device.startswith("cuda"):
        return [_finding("device", "warn", detail + "; a CUDA GPU is present but unused",
                         "set model.device=auto (or cuda)")]
    if not cuda:
        detail += "; no CUDA GPU visible (CPU inference: batching is the main speed lever)"
    return [_finding("device", "ok", detail)]


def _memory_checks() -> list[dict[str, str]]:
    import torch

    found = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            status = "warn" if free < 0.1 * total or free < GIB else "ok"
            found.append(_finding(
                f"gpu{i}_memory", status, f"{free / GIB:.1f} of {total / GIB:.1f} GiB free",
                "" if status == "ok" else
                "set optimization.max_gpu_memory_gb / offload_folder or use_quantization=true"))
    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    low = vm.available < 0.1 * vm.total or vm.available < 2 * GIB
    swapping = swap.used > 0.25 * max(swap.total, 1) and swap.used > GIB
    detail = (f"{vm.available / GIB:.1f} of {vm.total / GIB:.1f} GiB available, "
              f"swap used {swap.used / GIB:.1f} GiB")
    found.append(_finding("host_memory", "warn" if low or swapping else "ok", detail,
                          "lower optimization.batch_size or population; stop other jobs"
                          if low or swapping else ""))
    return found


def _cpu_check(cfg: RunConfig) -> dict[str, str]:
    import os

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = torch.get_num_threads()
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        return _finding("cpu_load", "ok", f"torch threads {threads} of {cores} cores")
    detail = f"load average {load1:.1f} on {cores} cores, torch threads {threads}"
    # Oversubscribed OpenMP threads spin-wait: measured 3-30x slower decoding with 2
    # threads on a loaded 2-core host, while 1 thread stayed fast.
    if load1 > cores and threads > 1:
        return _finding("cpu_load", "warn", detail + "; the CPU is oversubscribed",
                        "stop other jobs or set model.num_threads=1")
    return _finding("cpu_load", "ok", detail)


def _choice_checks(cfg: RunConfig, backend: Any) -> list[dict[str, str]]:
    """Which backend and dtype this config runs with on this machine, and why."""
    import copy

    from steertown.inference.choice import resolve_model

    if cfg.model.name == "mock":
        return [_finding("backend", "ok", "mock backend (model=mock): no model"),
                _finding("dtype", "ok", "mock backend: no model dtype")]
    try:  # a config built in code may still say auto; a loaded one carries its reasons
        cfg = resolve_model(copy.deepcopy(cfg))
    except Exception as e:  # e.g. cuda requested without a GPU: the device check says so
        return [_finding("backend", "warn", f"cannot resolve the model settings: {e}")]
    m = cfg.model
    why = cfg.resolved.get("model.backend", "").partition(": ")[2]
    found = [_finding("backend", "ok", f"{m.backend} (auto: {why})" if why
                      else f"{m.backend} (model.backend={m.backend} set explicitly)")]
    loaded = getattr(backend, "loaded", None)
    if m.backend == "onnx":
        detail = ("float32: the ONNX graph is float32 (ONNX Runtime, CPU); its torch reference "
                  "for vectors and verification is float32 too")
    elif loaded is not None and loaded.dtype_reason:
        detail = f"{loaded.dtype}: {loaded.dtype_reason}"
    else:
        detail = f"{m.dtype}: " + cfg.resolved.get("model.dtype", f"model.dtype={m.dtype} (set explicitly)")
    if m.backend != "onnx" and m.dtype != "float32":  # asked for (explicit dtype or model.exact=false): say the cost
        detail += "; not exact (batch == single, replay and resume are exact in float32 only)"
    found.append(_finding("dtype", "ok", detail))
    return found


def _quantization_check(cfg: RunConfig, backend: Any) -> dict[str, str]:
    loaded = getattr(backend, "loaded", None)
    if loaded is None:
        return _finding("quantization", "ok",
                        f"use_quantization={cfg.optimization.use_quantization} (no model loaded)")
    if loaded.quantization != "none":
        return _finding("quantization", "ok", f"{loaded.quantization} in effect")
    why = "; ".join(n for n in loaded.notes if "quantization" in n) or \
        "optimization.use_quantization=false"
    return _finding("quantization", "ok", f"full precision ({why})")


def preflight(cfg: RunConfig, backend: Any | None = None) -> list[dict[str, str]]:
    """Run every check; each finding is {check, status: ok|warn, detail, fix}."""
    found = _device_checks(cfg, backend)
    found += _memory_checks()
    found.append(_cpu_check(cfg))
    found += _choice_checks(cfg, backend)
    found.append(_quantization_check(cfg, backend))
    n = cfg.optimization.reflect_every_n_ticks
    found.append(_finding("reflection", "warn" if n == 1 else "ok",
                          f"agents reflect every {n} tick(s)" +
                          ("; reflection every tick was the guide's main slowdown" if n == 1 else ""),
                          "set optimization.reflect_every_n_ticks=5" if n == 1 else ""))
    vectors = getattr(backend, "vectors", None)
    vec_id = vectors.vector_id() if vectors is not None else "none (mock or not loaded)"
    steer = {"vectors": "mode vectors", "prompt": "mode prompt (persona text, no vectors)",
             "placebo": "mode placebo (random directions of the trait vectors' norms)",
             "off": "mode off (control run: all alphas 0)"}[cfg.steering.mode]
    found.append(_finding("steering", "ok",
                          f"layers {cfg.layers}, strength {cfg.steering.strength}, {steer}, "
                          f"vectors {vec_id}"))
    mnt = cfg.inference.max_new_tokens
    found.append(_finding("max_new_tokens", "warn" if mnt > 48 else "ok",
                          f"inference.max_new_tokens={mnt}, adaptive={cfg.inference.adaptive_tokens}",
                          "set inference.max_new_tokens=48" if mnt > 48 else ""))
    if backend is not None and getattr(backend, "loaded", None) is not None:
        from steertown.inference import transformers_backend

        loads = transformers_backend.LOAD_COUNT
        found.append(_finding("model_loads", "warn" if loads > 1 else "ok",
                              f"model loaded {loads} time(s) in this process",
                              "reuse one backend (steertown.inference.get_backend)" if loads > 1 else ""))
    return found


def format_findings(findings: list[dict[str, str]]) -> str:
    """One line per check (`[ok]`/`[WARN]`), plus an indented fix line for warnings."""
    lines = []
    for f in findings:
        tag = "[ok]  " if f["status"] == "ok" else "[WARN]"
        lines.append(f"{tag} {f['check']}: {f['detail']}")
        if f["fix"]:
            lines.append(f"       fix: {f['fix']}")
    return "\n".join(lines)
