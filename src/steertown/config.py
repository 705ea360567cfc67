"""Typed run configuration: the dataclass schema, its hash and diffs.

The schema mirrors the guide's vocabulary (population, steps, max_events_per_tick,
layers, steering.strength, inference.max_new_tokens, optimization.*).
`steertown.config_loading.load_config` turns the plain dict Hydra composed into a
validated `RunConfig`, or raises `ConfigError` with one line naming the key and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
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
    # auto = float32 while `exact` (inference.choice); an explicit dtype always wins
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda
    cache_dir: str = "storage/models"
    num_threads: int = 0  # torch (and ONNX Runtime) intra-op threads; 0 = runtime default
    # torch = HF transformers (the reference); onnx = ONNX Runtime graph built from the same
    # weights with per-row steering inputs (CPU; see inference/onnx_backend.py); auto = onnx
    # on CPU when it imports and the graph builds, else torch (inference.choice says why)
    backend: str = "auto"
    # true: dtype auto keeps float32 (batch == single, exact replay, exact resume);
    # false: speed over exactness, dtype auto follows the hardware (bfloat16 where native)
    exact: bool = True


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
    items_per_trait: int = 4
    coefficients: list[float] = field(default_factory=lambda: [-2.0, -1.0, 0.0, 1.0, 2.0])
    random_directions: int = 4  # controls of the same norm (>= 1; the gates compare with them)
    min_rho: float = 0.2  # in-run: Spearman of coefficient vs what agents said
    # Thresholds, justified by measurements in docs/verification.md.
    min_margin_slope: float = 0.1  # 95% CI lower bound of the margin slope must exceed it
    min_dose_rho: float = 0.8  # Spearman of coefficient vs item-mean margin
    min_vs_random: float = 1.0  # trait slope / largest random-direction |slope|
    max_ppl_ratio: float = 3.0  # coherence: steered / unsteered perplexity
    # Budget knobs: what each costs and what lowering it trades (docs/verification.md).
    likert: bool = False  # informative Likert curves: about the sweep's cost again when on
    likert_items: int = 4
    # Situations per trait for random and cross-trait controls; at 2 the random-direction
    # gate is seed-dependent (C 0.96x or 4.9x), at 4 every trait clears it (docs).
    control_items: int = 4
    cross_trait: bool = False  # informative 5x5 matrix: about the sweep's cost again when on
    messages_per_agent: int = 6  # in-run text check (informative); fewer: noisier rho
    coherence_prompts: int = 2
    coherence_tokens: int = 24
    # Decisions in situ: the run's own decisions re-scored (docs/verification.md).
    # decision_samples is verify's main cost (linear); fewer: less power for the required
    # decisions.changed and decisions.<T> (CIs widen ~1/sqrt(n)).
    decision_samples: int = 64  # decisions re-scored, spread over agents and ticks
    decision_coefficient: float = 1.0  # +c: each trait's decision axis (p(+c v) - p(0)) / c
    # Each random direction adds 3 conditions per decision (of 2 + 2 x traits + 3 x this).
    decision_random_directions: int = 1  # per decision, random directions of the own norm
    min_changed: float = 0.05  # decisions.changed: CI of the mean TV must exceed it (floor)
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
    # What each `auto` became on the machine that loaded the config, and why
    # ({"model.backend": "auto -> onnx: ..."}); filled by inference.choice.resolve_model.
    resolved: dict[str, str] = field(default_factory=dict)

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
                       "keep_checkpoints", "arm", "resolved")


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two result dicts."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def agent_ids(population: int) -> list[str]:
    """The agent ids of a town of `population` agents (world.residents names them so)."""
    return [f"agent-{i:03d}" for i in range(population)]


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
