"""Loading a run configuration: a plain (Hydra-resolved) dict -> a validated `RunConfig`.

`load_config` coerces every value to the schema's type (steertown.config), checks ranges
and cross-key rules, and raises `ConfigError` with one line naming the key and what is
allowed. Old keys (`steering.enabled`) are upgraded first.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

from steertown.config import (
    ACTION_TYPES,
    ARM_PATTERN,
    MODELS,
    RUN_ID_PATTERN,
    STEERING_MODES,
    TRAITS,
    ConfigError,
    RunConfig,
    VerificationConfig,
    agent_ids,
)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(key, value, a)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(f"{key}.{k}", v, vt) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(f"{prefix}{k}: unknown key; allowed: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)


def _check(cond: bool, key: str, allowed: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"{key}: {value!r} is out of range; allowed: {allowed}")


def validate(cfg: RunConfig) -> RunConfig:
    """Check ranges and cross-key constraints; raise ConfigError on the first problem."""
    _check(bool(ARM_PATTERN.fullmatch(cfg.arm)), "arm",
           "a name of letters, digits, '_', '-', '.' (an arm: a file in conf/arm/)", cfg.arm)
    if cfg.run_id is not None:
        _check(bool(RUN_ID_PATTERN.match(cfg.run_id)) and ".." not in cfg.run_id, "run_id",
               "letters, digits, '_', '-', '.' (no path separators or '..'), max 128", cfg.run_id)
    _check(cfg.seed >= 0, "seed", "an integer >= 0", cfg.seed)
    _check(1 <= cfg.population <= 100_000, "population", "1..100000", cfg.population)
    _check(cfg.steps >= 1, "steps", "an integer >= 1", cfg.steps)
    _check(cfg.max_events_per_tick >= 1, "max_events_per_tick", "an integer >= 1",
           cfg.max_events_per_tick)
    _check(cfg.checkpoint_every >= 1, "checkpoint_every", "an integer >= 1", cfg.checkpoint_every)
    _check(cfg.keep_checkpoints >= 1, "keep_checkpoints", "an integer >= 1", cfg.keep_checkpoints)
    _check(cfg.model.name in MODELS, "model.name", " | ".join(MODELS), cfg.model.name)
    _check(cfg.model.dtype in ("auto", "float32", "bfloat16", "float16"), "model.dtype",
           "auto | float32 | bfloat16 | float16", cfg.model.dtype)
    _check(cfg.model.backend in ("auto", "torch", "onnx"), "model.backend", "auto | torch | onnx",
           cfg.model.backend)
    _check(bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.model.device)), "model.device",
           "auto | cpu | cuda | cuda:<index>", cfg.model.device)
    _check(cfg.model.num_layers >= 1, "model.num_layers", "an integer >= 1", cfg.model.num_layers)
    _check(cfg.model.num_threads >= 0, "model.num_threads", "an integer >= 0",
           cfg.model.num_threads)
    _check(len(cfg.layers) >= 1 and len(set(cfg.layers)) == len(cfg.layers), "layers",
           "a non-empty list of distinct layer numbers", cfg.layers)
    for i, layer in enumerate(cfg.layers):
        _check(1 <= layer <= cfg.model.num_layers, f"layers[{i}]",
               f"1..{cfg.model.num_layers} (the model's decoder layers)", layer)
    inf = cfg.inference
    _check(1 <= inf.max_new_tokens <= 2048, "inference.max_new_tokens", "1..2048",
           inf.max_new_tokens)
    _check(math.isfinite(inf.temperature) and 0 <= inf.temperature <= 5,
           "inference.temperature", "0..5 (0 = greedy)", inf.temperature)
    _check(0 < inf.top_p <= 1, "inference.top_p", "0 < top_p <= 1", inf.top_p)
    _check(math.isfinite(inf.repetition_penalty) and 1 <= inf.repetition_penalty <= 3,
           "inference.repetition_penalty", "1..3", inf.repetition_penalty)
    for k, v in inf.max_new_tokens_by_action.items():
        _check(k in ACTION_TYPES, f"inference.max_new_tokens_by_action.{k}",
               " | ".join(ACTION_TYPES), k)
        _check(v >= 1, f"inference.max_new_tokens_by_action.{k}", "an integer >= 1", v)
    st = cfg.steering
    _check(math.isfinite(st.strength) and 0 <= st.strength <= 20, "steering.strength",
           "a finite number in 0..20", st.strength)
    _check(math.isfinite(st.spread) and 0 <= st.spread <= 2, "steering.spread", "0..2",
           st.spread)
    for k, v in st.coefficients.items():
        _check(k in TRAITS, f"steering.coefficients.{k}", " | ".join(TRAITS), k)
        _check(math.isfinite(v) and -1 <= v <= 1, f"steering.coefficients.{k}",
               "a number in [-1, 1]", v)
    st.coefficients = {t: float(st.coefficients.get(t, 0.0)) for t in TRAITS}
    _check(st.mode in STEERING_MODES, "steering.mode", " | ".join(STEERING_MODES), st.mode)
    ids = agent_ids(cfg.population)
    for agent_id, traits in st.agents.items():
        if agent_id not in ids:
            raise ConfigError(f"steering.agents.{agent_id}: unknown agent id; allowed: "
                              f"{ids[0]}..{ids[-1]} (population {cfg.population})")
        for t, v in traits.items():
            key = f"steering.agents.{agent_id}.{t}"
            _check(t in TRAITS, key, "a trait: " + " | ".join(TRAITS), t)
            _check(math.isfinite(v) and -1 <= v <= 1, key, "a number in [-1, 1]", v)
    op = cfg.optimization
    _check(op.reflect_every_n_ticks >= 1, "optimization.reflect_every_n_ticks",
           "an integer >= 1", op.reflect_every_n_ticks)
    _check(1 <= op.batch_size <= 1024, "optimization.batch_size", "1..1024", op.batch_size)
    _check(1 <= op.num_gpus <= 64, "optimization.num_gpus", "1..64", op.num_gpus)
    for key in ("max_gpu_memory_gb", "max_cpu_memory_gb"):
        v = getattr(op, key)
        _check(v is None or (math.isfinite(v) and v > 0), f"optimization.{key}",
               "null or a positive number", v)
    mem = cfg.memory
    _check(1 <= mem.retrieve_k <= 64, "memory.retrieve_k", "1..64", mem.retrieve_k)
    _check(mem.max_memories >= mem.retrieve_k, "memory.max_memories",
           f">= memory.retrieve_k ({mem.retrieve_k})", mem.max_memories)
    _check(mem.embedder in ("minilm", "hashing"), "memory.embedder", "minilm | hashing",
           mem.embedder)
    _check(0 < mem.recency_decay <= 1, "memory.recency_decay", "0 < decay <= 1",
           mem.recency_decay)
    # more knowers than agents is capped at the population (small test towns keep the default)
    _check(cfg.world.news_knowers >= 0, "world.news_knowers", "an integer >= 0",
           cfg.world.news_knowers)
    ver = cfg.verification
    _check(len(ver.coefficients) >= 3, "verification.coefficients", "at least 3 values",
           ver.coefficients)
    _check(ver.num_files >= 0, "verification.num_files", "an integer >= 0", ver.num_files)
    # Zero controls would let the random-direction gates pass vacuously.
    _check(ver.random_directions >= 1, "verification.random_directions", "an integer >= 1",
           ver.random_directions)
    _check(ver.control_items >= 1, "verification.control_items", "an integer >= 1",
           ver.control_items)
    _check(ver.items_per_trait >= 2, "verification.items_per_trait", "an integer >= 2",
           ver.items_per_trait)
    _check(ver.decision_samples >= 3, "verification.decision_samples", "an integer >= 3",
           ver.decision_samples)
    _check(ver.decision_coefficient > 0, "verification.decision_coefficient", "a number > 0",
           ver.decision_coefficient)
    _check(ver.replay_tolerance > 0, "verification.replay_tolerance", "a number > 0",
           ver.replay_tolerance)
    _check(ver.decision_random_directions >= 1, "verification.decision_random_directions",
           "an integer >= 1", ver.decision_random_directions)
    return cfg


# Verdict thresholds: the project defaults are floors. A run may tighten them, never
# loosen them (a verdict that a run's own config can weaken means nothing). +1: higher is
# stricter; -1: lower is stricter.
THRESHOLD_DIRECTIONS = {"min_margin_slope": 1, "min_dose_rho": 1, "min_vs_random": 1,
                        "min_changed": 1, "min_rho": 1, "max_ppl_ratio": -1,
                        "replay_tolerance": -1}


def loosened_thresholds(ver: Any) -> list[str]:
    """One-line messages for each threshold of `ver` looser than the project default."""
    floor = VerificationConfig()
    out = []
    for key, sign in THRESHOLD_DIRECTIONS.items():
        value, default = getattr(ver, key, getattr(floor, key)), getattr(floor, key)
        if (value - default) * sign < 0:
            word = "at least" if sign > 0 else "at most"
            out.append(f"verification.{key}: {value!r} loosens the project threshold "
                       f"{default!r}; a run may tighten it ({word} {default!r}), never loosen it")
    return out


def floored(ver: Any) -> Any:
    """`ver` with every threshold at least as strict as the project default (for runs
    whose manifest predates the floors, or was edited)."""
    floor = VerificationConfig()
    changes = {}
    for key, sign in THRESHOLD_DIRECTIONS.items():
        value, default = getattr(ver, key, getattr(floor, key)), getattr(floor, key)
        changes[key] = max(value, default) if sign > 0 else min(value, default)
    return dataclasses.replace(ver, **changes)


def _upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Accept the old `steering.enabled` (configs and manifests written before modes):
    false = mode off, true = no change; contradicting an explicit mode is an error."""
    st = data.get("steering")
    if isinstance(st, dict) and st.get("mode") is False:
        st = {**st, "mode": "off"}  # YAML 1.1 (OmegaConf's loader) reads `mode: off` as false
        data = {**data, "steering": st}
    if not isinstance(st, dict) or "enabled" not in st:
        return data
    st = dict(st)
    enabled = st.pop("enabled")
    if not isinstance(enabled, bool):
        raise ConfigError(f"steering.enabled: expected true or false, got {enabled!r} "
                          "(replaced by steering.mode: " + " | ".join(STEERING_MODES) + ")")
    if not enabled:
        if st.get("mode", "off") != "off":
            raise ConfigError(f"steering.enabled: false contradicts steering.mode={st['mode']}; "
                              "use steering.mode only")
        st["mode"] = "off"
    return {**data, "steering": st}


def load_config(data: dict[str, Any], new_run: bool = False) -> RunConfig:
    """Build and validate a RunConfig from a plain (Hydra-resolved) dict; `auto` model
    device/backend/dtype become this machine's values (inference.choice), so they are
    part of the config hash.

    Verdict thresholds looser than the project's: for a `new_run` (the run flow's
    resolve_config) a one-line ConfigError naming the key; when reading a recorded
    config (a manifest written before the floors, or edited) they are floored, so no
    reader ever judges with looser thresholds and old runs still load."""
    from steertown.inference.choice import resolve_model

    data = _upgrade_legacy({k: v for k, v in data.items() if k != "hydra"})
    cfg = validate(_build(RunConfig, data))
    loose = loosened_thresholds(cfg.verification)
    if loose and new_run:
        raise ConfigError(loose[0])
    if loose:
        cfg.verification = floored(cfg.verification)
    return resolve_model(cfg)


def steering_mode(config: dict[str, Any]) -> str:
    """The steering mode of a (possibly old) config dict, with the schema's default: the one
    place that reads it. An old `steering.enabled: false` reads as "off", a missing mode
    as RunConfig's default ("vectors")."""
    st = _upgrade_legacy({"steering": dict((config or {}).get("steering") or {})})["steering"]
    return str(st.get("mode", RunConfig().steering.mode))


def steering_mode_of_params(params: dict[str, str]) -> str:
    """The steering mode of an MLflow run from its flattened params (strings), read as
    `steering_mode` reads a config: `steering.enabled` "False" of an old run is "off"."""
    st: dict[str, Any] = {}
    if "steering.mode" in params:
        st["mode"] = params["steering.mode"]
    if "steering.enabled" in params:
        st["enabled"] = {"true": True, "false": False}.get(
            str(params["steering.enabled"]).lower(), params["steering.enabled"])
    return steering_mode({"steering": st})
