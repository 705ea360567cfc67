"""What `model.backend`, `model.dtype` and `model.device: auto` become on this machine, and why.

`resolve_model(cfg)` replaces each `auto` with the value this machine gets and records
the reason in `cfg.resolved` (result-neutral). config_loading calls it, so the resolved
values are part of the config hash, the derived run id, the manifest and every resume
and fork check: a run continued on other hardware that would resolve differently is
refused (explicit run id) or becomes another run (derived run id), never silently mixed.

- backend auto: ONNX Runtime on CPU when `onnxruntime` imports and the steerable graph
  is cached or its builder imports (onnx_export builds it once, offline); torch on a
  GPU, with several GPUs, for a model the graph cannot be built from (a hub id or a
  single GGUF file), or with an explicit dtype other than float32 (the graph is float32).
  Measured on a 2-core AVX-512 EPYC: ONNX float32 7.96 s a tick, torch float32 14.42,
  torch bfloat16 13.20, ONNX identical to torch float32 on 144/144 action messages.
- dtype auto: float32, because the project promises batch == single, exact replay and
  exact resume, which only float32 keeps. `model.exact: false` asks for speed over
  exactness: auto then follows the hardware (model_loading.choose_dtype).
- device auto: cuda when a CUDA GPU is visible, else cpu.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from steertown.config import ConfigError, RunConfig
from steertown.extras import install_hint

ONNX_MISSING_FIX = f"{install_hint('onnx')} or set model.backend=torch"


def onnxruntime_version() -> str | None:
    """The importable onnxruntime's version, or None when it does not import (not cached:
    after the first import this is a dictionary lookup, and tests may hide the module)."""
    try:
        return importlib.import_module("onnxruntime").__version__
    except Exception:  # noqa: BLE001 (a broken install counts as absent, with any error)
        return None


def _builder_missing() -> list[str]:
    return [m for m in ("onnx", "onnxruntime_genai") if importlib.util.find_spec(m) is None]


def graph_source(cfg: RunConfig) -> Path | None:
    """The local HF directory the ONNX graph is built from; None when there is none."""
    from steertown.inference.model_loading import BUNDLED_CACHE_NAME

    path = cfg.model.name_or_path
    if path is None:
        return None if cfg.model.name == "hf" else Path(cfg.model.cache_dir) / BUNDLED_CACHE_NAME
    p = Path(path).expanduser()
    return p if p.is_dir() and (p / "config.json").exists() else None


def choose_backend(cfg: RunConfig, device: str) -> tuple[str, str]:
    """(torch | onnx, why) for `model.backend: auto` on this machine."""
    from steertown.inference.onnx_export import COMPLETE_MARKER, onnx_dir

    if device.startswith("cuda"):
        return "torch", f"GPU ({device}): the ONNX graph runs on CPU only"
    if cfg.optimization.num_gpus > 1:
        return "torch", "optimization.num_gpus > 1 shards across GPUs (torch)"
    if cfg.model.dtype not in ("auto", "float32"):
        return "torch", f"model.dtype={cfg.model.dtype} set explicitly (the ONNX graph is float32)"
    version = onnxruntime_version()
    if version is None:
        return "torch", f"onnxruntime does not import (for ONNX: {install_hint('onnx')})"
    source = graph_source(cfg)
    if source is None:
        return "torch", (f"the ONNX graph is built from a local model directory; "
                         f"{cfg.model.name_or_path} is not one")
    graph = onnx_dir(source, cfg.layers)
    if (graph / COMPLETE_MARKER).exists():
        return "onnx", f"CPU, onnxruntime {version}, graph cached at {graph}"
    missing = _builder_missing()
    if missing:
        return "torch", f"ONNX graph not cached and its builder does not import ({', '.join(missing)})"
    return "onnx", (f"CPU, onnxruntime {version}; the graph is built once on first load "
                    f"(about a minute) and cached at {graph}")


def choose_exact_dtype(cfg: RunConfig, backend: str, device: str) -> tuple[str, str]:
    """(dtype name, why) for `model.dtype: auto`."""
    if backend == "onnx":
        return "float32", "the ONNX graph is float32"
    if cfg.model.exact:
        return "float32", ("model.exact=true: float32 keeps batch == single, exact replay and "
                           "exact resume (model.exact=false lets auto follow the hardware)")
    from steertown.inference.model_loading import choose_dtype

    dtype, why = choose_dtype("auto", device)
    return str(dtype).replace("torch.", ""), f"model.exact=false, {why}"


def resolve_model(cfg: RunConfig) -> RunConfig:
    """Replace `auto` in model.device/backend/dtype with this machine's values (in place).

    Reasons go to `cfg.resolved` ({"model.backend": "auto -> onnx: why", ...}). The mock
    model and configs without `auto` are left as they are.
    """
    m = cfg.model
    if m.name == "mock" or "auto" not in (m.device, m.backend, m.dtype):
        return cfg
    from steertown.inference.model_loading import resolve_device

    notes = dict(cfg.resolved)
    if m.device == "auto":
        m.device = resolve_device("auto")
        notes["model.device"] = f"auto -> {m.device}"
    if m.backend == "auto":
        m.backend, why = choose_backend(cfg, m.device)
        notes["model.backend"] = f"auto -> {m.backend}: {why}"
    if m.dtype == "auto":
        m.dtype, why = choose_exact_dtype(cfg, m.backend, m.device)
        notes["model.dtype"] = f"auto -> {m.dtype}: {why}"
    cfg.resolved = notes
    return cfg


def check_backend_available(cfg: RunConfig) -> None:
    """ConfigError (one line) when the config's backend cannot run here, e.g. a run resolved
    to onnx elsewhere, resumed or forked on a machine without onnxruntime."""
    if cfg.model.name == "mock" or cfg.model.backend != "onnx":
        return
    if onnxruntime_version() is None:
        raise ConfigError("model.backend: onnx (as resolved for this run) but onnxruntime does "
                          f"not import here; {ONNX_MISSING_FIX} (a new run)")
    if cfg.model.device.startswith("cuda"):
        raise ConfigError(f"model.backend: onnx runs on CPU only, model.device is {cfg.model.device}")


def ran_with(model_record: dict) -> tuple[str, str] | None:
    """(backend, dtype) a run's manifest says its model ran with (`describe()`); None if
    it does not say (mock, or a run that never loaded its model)."""
    backend, dtype = model_record.get("backend"), model_record.get("dtype")
    if not backend or not dtype or dtype == "none":
        return None
    return {"transformers": "torch"}.get(backend, backend), dtype


def check_same_model(cfg: RunConfig, model_record: dict, what: str) -> None:
    """ConfigError (one line) when `cfg` would run another backend or dtype than the run
    whose manifest recorded `model_record` (a fork or resume must continue it exactly)."""
    ran = ran_with(model_record)
    if cfg.model.name == "mock" or ran is None:
        return
    here = (cfg.model.backend, cfg.model.dtype)
    if here != ran:
        why = cfg.resolved.get("model.backend") or cfg.resolved.get("model.dtype") or "set"
        raise ConfigError(f"model: {what} ran {ran[0]} {ran[1]}, this machine gives "
                          f"{here[0]} {here[1]} ({why}); it cannot continue exactly here")
