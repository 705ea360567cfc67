"""The backend protocol: batched generation where every row carries its own steering.

A `GenerationRequest` is one agent's prompt plus the effective steering it must be
generated with (trait -> alpha, already multiplied by `steering.strength`; the backend
maps alpha to residual-stream units with its calibration). Backends answer one batch
at a time; `inference.batching` splits a tick's requests into batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    system: str  # stable per agent (persona), kept first so its KV cache can be reused
    user: str  # per-tick situation
    steering: dict[str, float]  # trait -> effective alpha (strength * coefficient)
    max_new_tokens: int
    seed: int  # per-request sampling seed: output does not depend on batch neighbours
    kind: str = "action"  # action | reflection
    # Adaptive limits: once the reply starts with one of these words (case-insensitive),
    # its budget shrinks to the given number of new tokens (a MOVE needs few, a TALK more).
    token_caps: dict[str, int] = field(default_factory=dict)
    stop_at_newline: bool = False  # an action is one line: stop at the first newline after text
    # Constrained start (see inference.constrained): the reply must begin with one of these
    # options, e.g. ("Move park", "Talk Ben:", "Work:", "Rest"); free text follows an
    # option ending in ':', any other option ends the reply. Empty = unconstrained.
    options: tuple[str, ...] = ()
    # Steering modes (steertown.steering.modes): `steering` is what the backend adds; with
    # `placebo_seed` set it multiplies the seeded placebo directions instead of the trait
    # vectors. `dose` is the agent's effective alphas as logged (steering is zero in
    # prompt and off mode); None = same as steering.
    placebo_seed: int | None = None
    dose: dict[str, float] | None = None


@dataclass
class GenerationResult:
    request_id: str
    text: str
    tokens_in: int
    tokens_out: int
    extra: dict = field(default_factory=dict)
    # For constrained requests: the option the reply started with, and its log-probability
    # under the model at generation time (temperature 1, no repetition penalty, renormalised
    # over the tokens the option trie allowed at each step). This is what decision replay
    # re-scores; "" / None when unconstrained.
    option: str = ""
    option_logprob: float | None = None


class Backend(Protocol):
    """What the simulation needs from a model."""

    name: str
    layers: list[int]

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate one batch; results in the order of `requests`."""
        ...

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Prompt length in tokens (used to bucket requests by length)."""
        ...

    def describe(self) -> dict:
        """Model id, dtype, device, vector ids: recorded in the run manifest."""
        ...
