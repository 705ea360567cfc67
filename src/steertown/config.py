"""Typed run configuration: dataclass schema, validation from a plain dict, hashing.

The schema mirrors the guide's vocabulary (population, steps, max_events_per_tick,
layers, steering.strength, inference.max_new_tokens, optimization.*). `load_config`
turns the plain dict Hydra composed into a `RunConfig`, or raises `ConfigError` with
one line naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

TRAITS: tuple[str, ...] = ("E", "A", "C", "O", "N")
# Arms are the files in conf/arm/ (checked where Hydra composes); here only a safe name.
ARM_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MODELS: tuple[str, ...] = ("smollm2", "mock", "hf")
ACTION_TYPES: tuple[str, ...] = ("MOVE", "TALK", "WORK", "REST", "REFLECT")
# How agents' coefficients reach the model: trait vectors (the default), persona text
# (the prompting baseline), random directions of the same norms (placebo), or not at all.
STEERING_MODES: tuple[str, ...] = ("vectors", "prompt", "placebo", "off")
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ConfigError(ValueError):
    """A user mistake in the configuration; the message is one line, shown as is."""


@dataclass
class ModelConfig:
    name: str = "smollm2"  # smollm2 | mock | hf
    name_or_path: str | None = None  # local HF dir or hub id; None = bundled SmolLM2
    num_layers: int = 30  # decoder layers; checked against `layers`
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    cache_dir: str = "storage/models"
    num_threads: int = 0  # torch (and ONNX Runtime) intra-op threads; 0 = runtime default
    # torch = HF transformers (the reference); onnx = ONNX Runtime graph built from the same
    # weights with per-row steering inputs (CPU; see inference/onnx_backend.py)
    backend: str = "torch"


@dataclass
class InferenceConfig:
    max_new_tokens: int = 48
    temperature: float = 0.7  # 0 = greedy
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    adaptive_tokens: bool = True  # per-action token caps + stop at end of action
    # Action lines stop at the end of their first full sentence (>= 4 words of free text):
    # a 135M model that goes on past one sentence mostly drifts into assistant-speak.
    stop_at_sentence: bool = True
    # Whether the repetition penalty of free text also counts the prompt's tokens (so lines
    # are not copied from the prompt). Option choices are never penalised: penalising the
    # option words the prompt mentions handed the turn to whichever word it did not mention.
    penalize_prompt_tokens: bool = True
    # Work lines in the first person: after the "Work: I" option, second-person words are
    # masked (a 135M chat model otherwise keeps addressing a "you" like an assistant).
    first_person_work: bool = True
    # REFLECT 32: a plan is "one or two sentences" and is cut to 300 characters anyway;
    # uncapped reflections ran to 48 tokens and were over half of a run's decode steps.
    max_new_tokens_by_action: dict[str, int] = field(
        default_factory=lambda: {"MOVE": 16, "WORK": 24, "REST": 12, "REFLECT": 32}
    )


@dataclass
class SteeringConfig:
    mode: str = "vectors"  # vectors | prompt | placebo | off (replaces the old `enabled`)
    strength: float = 1.0
    coefficients: dict[str, float] = field(
        default_factory=lambda: {"E": 0.0, "A": 0.0, "C": 0.0, "O": 0.0, "N": 0.0}
    )
    spread: float = 0.5  # per-trait std of agents' coefficients around the means
    vectors_dir: str = "storage/vectors"
    # Per-agent interventions: {agent_id: {trait: coefficient}} replaces the sampled value.
    agents: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class OptimizationConfig:
    reflect_every_n_ticks: int = 5
    use_quantization: bool = False  # the fast arm turns it on (4-bit NF4 on CUDA)
    batch_size: int = 16
    max_gpu_memory_gb: float | None = None
    max_cpu_memory_gb: float | None = None
    offload_folder: str | None = None
    prefix_cache: bool = True
    num_gpus: int = 1  # > 1: one model replica per GPU, each tick's rows sharded across them


@dataclass
class MemoryConfig:
    retrieve_k: int = 4
    max_memories: int = 200
    embedder: str = "minilm"  # minilm (real model) | hashing (fast, for tests/scale)
    recency_decay: float = 0.95


@dataclass
class VerificationConfig:
    enabled: bool = True
    model_checks: bool = True  # mechanistic / dose-response checks on the model
    num_files: int = 0  # 0 = all message files
    items_per_trait: int = 8
    coefficients: list[float] = field(default_factory=lambda: [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    random_directions: int = 8  # controls of the same norm (>= 1; the gates compare with them)
    min_rho: float = 0.2  # in-run: Spearman of coefficient vs what agents said
    # Thresholds, justified by measurements in docs/verification.md.
    min_margin_slope: float = 0.1  # 95% CI lower bound of the margin slope must exceed it
    min_dose_rho: float = 0.8  # Spearman of coefficient vs item-mean margin
    min_vs_random: float = 1.0  # trait slope / largest random-direction |slope|
    max_ppl_ratio: float = 3.0  # coherence: steered / unsteered perplexity
    # Budget knobs.
    likert: bool = True
    likert_items: int = 4
    control_items: int = 4  # situations per trait for random and cross-trait controls
    cross_trait: bool = True
    messages_per_agent: int = 6
    coherence_prompts: int = 3
    coherence_tokens: int = 24
    # Decisions in situ: the run's own decisions re-scored (docs/verification.md).
    decision_samples: int = 64  # decisions re-scored, spread over agents and ticks
    decision_coefficient: float = 1.0  # +-c for each trait's (and random) decision axis
    replay_tolerance: float = 1e-3  # |logged - replayed| log-prob (float32; x50 otherwise)
    text_measure: bool = True  # MiniLM text score per trait (independent of the model)
    seed: int = 0


@dataclass
class WorldConfig:
    news_knowers: int = 3  # agents who know the seeded news at tick 0
    log_prompts: bool = False  # messages.prompt gets each generation's full prompt text


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "steertown"
    tracking_uri: str | None = None  # None = MLFLOW_TRACKING_URI or sqlite:///mlflow.db


@dataclass
class RunConfig:
    arm: str = "custom"
    run_id: str | None = None
    seed: int = 0
    population: int = 32
    steps: int = 200
    max_events_per_tick: int = 12
    checkpoint_every: int = 10
    keep_checkpoints: int = 3
    layers: list[int] = field(default_factory=lambda: [16])
    live: bool = True
    color: bool = True
    resume: bool = True
    overwrite: bool = False
    storage_dir: str = "storage/dumps"
    reports_dir: str = "reports"
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    steering: SteeringConfig = field(default_factory=SteeringConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict[str, Any]:
        """The keys that determine the run's rows (presentation and later stages left out)."""
        d = self.to_dict()
        for k in RESULT_NEUTRAL_KEYS:
            d.pop(k, None)
        return d

    def config_hash(self) -> str:
        """Hash of everything that determines the run's results."""
        return hashlib.sha256(json.dumps(self.result_dict(), sort_keys=True).encode()).hexdigest()[:16]


# Keys that may change between a run and its resume without changing its rows.
RESULT_NEUTRAL_KEYS = ("live", "color", "resume", "overwrite", "run_id", "tracking",
                       "verification", "storage_dir", "reports_dir", "checkpoint_every",
                       "keep_checkpoints", "arm")


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two result dicts."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


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
    _check(cfg.model.backend in ("torch", "onnx"), "model.backend", "torch | onnx", cfg.model.backend)
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
    return cfg


def agent_ids(population: int) -> list[str]:
    """The agent ids of a town of `population` agents (agents.profile names them so)."""
    return [f"agent-{i:03d}" for i in range(population)]


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


def load_config(data: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from a plain (Hydra-resolved) dict."""
    data = _upgrade_legacy({k: v for k, v in data.items() if k != "hydra"})
    return validate(_build(RunConfig, data))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (for MLflow params and config diffs)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
