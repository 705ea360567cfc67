"""Steering modes: how an agent's coefficients reach the model (`steering.mode`).

- vectors: alphas x trait vectors added to the residual stream (the default).
- prompt: the same alphas rendered as persona text in the system prompt
  (steering.persona_text); zero alphas reach the hooks. The prompting baseline.
- placebo: the alphas multiply seeded random directions with the trait vectors' norms
  (TraitVectors.placebo_matrix) instead of the trait vectors.
- off: nothing; rows log zero alphas and strength 0 (today's `enabled: false`).

In every mode but off, message and decision rows log the agent's effective alphas
(strength x coefficient, the "dose": world.residents.Agent.steering), so the same analysis (behaviour vs alpha) runs
in each mode; the `steering_mode` column says how the dose was delivered.
The engine decides the delivery, so a backend that knows nothing of modes is still
right for prompt and off (it receives zero alphas); placebo needs `placebo_seed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from steertown.config import TRAITS
from steertown.seeds import derive_seed
from steertown.steering.persona_text import with_persona_text

HOOKED_MODES = ("vectors", "placebo")  # modes whose alphas reach the residual stream


@dataclass(frozen=True)
class Delivery:
    """What one generation request gets for an agent's dose in a mode."""

    steering: dict[str, float]  # alphas the backend adds (zero in prompt and off)
    system: str  # the system prompt (persona text appended in prompt mode)
    placebo_seed: int | None  # seed of the placebo basis; None = trait vectors


def deliver(mode: str, alphas: Mapping[str, float], system: str,
            placebo_seed: int) -> Delivery:
    """Route an agent's dose into hooks, prompt text or nowhere, by mode."""
    zero = {t: 0.0 for t in TRAITS}
    if mode == "vectors":
        return Delivery(dict(alphas), system, None)
    if mode == "placebo":
        return Delivery(dict(alphas), system, placebo_seed)
    if mode == "prompt":
        return Delivery(zero, with_persona_text(system, alphas), None)
    if mode == "off":
        return Delivery(zero, system, None)
    raise ValueError(f"steering.mode: {mode!r}; allowed: vectors | prompt | placebo | off")


def placebo_seed(run_seed: int) -> int:
    """The placebo basis seed of a run: fixed by the run's seed (a fork keeps it)."""
    return derive_seed(run_seed, "placebo")


def logged_strength(strength: float, mode: str) -> float:
    """The `strength` column of a row: 0 when off (nothing was applied)."""
    return 0.0 if mode == "off" else strength


def steering_record(mode: str, vector_id: str | None, placebo_seed: int) -> dict:
    """The manifest's `steering` section: mode and the vector id the run really used."""
    from steertown.steering.vectors import placebo_vector_id

    base = vector_id or "none"
    used = {"vectors": base, "placebo": placebo_vector_id(base, placebo_seed),
            "prompt": "none (persona text)", "off": "none (off)"}[mode]
    rec = {"mode": mode, "vector_id": used, "trait_vector_id": base}
    if mode == "placebo":
        rec["placebo_seed"] = placebo_seed
    return rec


CONTROL_NOTES = {
    "placebo": "Control run (steering.mode=placebo): the agents' coefficients multiplied random "
               "directions of the trait vectors' norms, not the trait vectors. The required "
               "steering checks are expected to FAIL here; a PASS would mean they are not "
               "specific to the traits.",
    "prompt": "Prompting baseline (steering.mode=prompt): the coefficients reached the model as "
              "persona text and no vectors were added. Checks of the residual stream do not "
              "apply as in a vectors run; behaviour checks measure the prompt's effect.",
    "off": "Control run (steering.mode=off): nothing was steered and every alpha is 0. The "
           "required steering checks are expected to FAIL here.",
}


def control_note(mode: str) -> str | None:
    """What a run's verification means in its mode (None for vectors, the steered mode)."""
    return CONTROL_NOTES.get(mode)
