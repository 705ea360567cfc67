"""Mock backend: deterministic, varied, parseable replies derived from seed, prompt and
steering. For tests and prototyping of the non-LLM machinery only.

Steering shifts the action mix (E -> TALK and INVITE, A -> HELP and ACCEPT, C -> WORK,
N -> REST, O -> MOVE) and the wording (A -> friendly or blunt), so tests can see the
steering reach the backend. With options (constrained requests) the reply starts with
one of them, as on the real backend; low energy makes REST likelier and a line said to
the agent makes answering it likelier.
Placebo rows (request.placebo_seed) mimic random directions in a real model: they reach
the trait axes only through a seeded matrix of cosines of random directions in a
`MOCK_HIDDEN`-dimensional space (about 1/sqrt(576) each), so they barely move behaviour.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from steertown.inference.backend import GenerationRequest, GenerationResult

_PLACES_RE = re.compile(r"Places next to you: (.*)\.")
_HERE_RE = re.compile(r"Here with you: (.*)\.")
_ENERGY_RE = re.compile(r"energy (\d+)/")
_ANSWER_RE = re.compile(r'^(.+?) said to you: "', re.MULTILINE)
FRIENDLY = ("I'd love to hear your ideas", "shall we do this together?",
            "thanks for helping out", "you always make this fun")
BLUNT = ("let's just get it done", "I don't have time for chatter",
         "that plan won't work", "fine, whatever")
WORK = ("I sort the notes for the brief", "I fix the bench", "I draft the plan",
        "I clean up the tables")
MOCK_HIDDEN = 576  # the default model's hidden size: random directions' cosines scale with it


def placebo_mixing(seed: int) -> np.ndarray:
    """[5, 5] cosines between seeded random directions (rows) and the trait axes."""
    rng = np.random.default_rng(int(seed))
    return rng.normal(0.0, 1.0 / np.sqrt(MOCK_HIDDEN), size=(5, 5))


def _matching_option(text: str, options: tuple[str, ...]) -> str:
    """The allowed option a mock reply starts with (case-insensitive), or ""."""
    low = text.lower()
    for opt in options:
        if low.startswith(opt.lower().rstrip(":")):
            return opt
    return ""


class MockBackend:
    """Implements the Backend protocol without a model."""

    name = "mock"

    def __init__(self, layers: list[int]):
        self.layers = list(layers)

    def describe(self) -> dict:
        return {"name": "mock", "device": "cpu", "dtype": "none", "layers": self.layers,
                "vectors": "none (mock)"}

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(request.system.split()) + len(request.user.split())

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [self._one(r) for r in requests]

    def _one(self, r: GenerationRequest) -> GenerationResult:
        digest = hashlib.sha256(f"{r.seed}|{r.system}|{r.user}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        s = {t: r.steering.get(t, 0.0) for t in "EACON"}
        if r.placebo_seed is not None:
            mixed = np.array([s[t] for t in "EACON"]) @ placebo_mixing(r.placebo_seed)
            s = {t: float(v) for t, v in zip("EACON", mixed, strict=True)}
        if r.kind == "reflection":
            focus = "meet people and talk" if s["E"] > 0 else "work quietly on my own"
            text = f"I will {focus} and keep working towards my goal."
        elif r.options:
            text = self._option(rng, r.user, r.options, s)
        else:
            text = self._action(rng, r.user, s)
        words = text.split()[: r.max_new_tokens]
        option = _matching_option(text, r.options)
        # A stand-in log-probability: uniform over the allowed options (no model here).
        logprob = -float(np.log(len(r.options))) if option else None
        return GenerationResult(r.request_id, " ".join(words), self.count_prompt_tokens(r),
                                len(words), option=option, option_logprob=logprob)

    def _option(self, rng: np.random.Generator, prompt: str, options: tuple[str, ...],
                s: dict[str, float]) -> str:
        """Pick an option: a steering-dependent weight per action kind, split over its options."""
        energy = _ENERGY_RE.search(prompt)
        tired = energy is not None and int(energy.group(1)) < 3
        answer = _ANSWER_RE.search(prompt)
        weight = {"Move": 0.3 + s["O"], "Talk": 0.5 + 1.5 * s["E"], "Help": 0.2 + 1.2 * s["A"],
                  "Invite": 0.1 + s["E"] + 0.5 * s["A"], "Accept": 0.8 + s["A"] + 0.5 * s["E"],
                  "Work": 0.4 + 1.5 * s["C"] - (2.0 if tired else 0.0),
                  "Rest": 1.5 * s["N"] - 0.5 * s["E"] + (2.0 if tired else 0.0)}
        kinds = sorted({o.split(" ", 1)[0].rstrip(":") for o in options})
        logits = np.array([weight.get(k, 0.0) for k in kinds])
        p = np.exp(logits - logits.max())
        kind = kinds[rng.choice(len(kinds), p=p / p.sum())]
        mine = [o for o in options if o.split(" ", 1)[0].rstrip(":") == kind]
        if answer and kind == "Talk" and f"Talk {answer.group(1)}:" in mine:
            mine = [f"Talk {answer.group(1)}:"]  # answer the one who spoke
        option = mine[int(rng.integers(len(mine)))]
        if kind == "Talk":
            phrases = FRIENDLY if s["A"] + rng.normal(0, 0.3) > 0 else BLUNT
            return f"{option} {rng.choice(phrases)}"
        if kind == "Work":
            return f"{option} {rng.choice(WORK)}"
        return option

    def _action(self, rng: np.random.Generator, prompt: str, s: dict[str, float]) -> str:
        places = _PLACES_RE.search(prompt)
        here = _HERE_RE.search(prompt)
        others = here.group(1).split(", ") if here else []
        logits = np.array([0.3 + s["O"], 0.5 + 1.5 * s["E"] if others else -9.0,
                           0.4 + 1.5 * s["C"], 1.5 * s["N"] - 0.5 * s["E"]])
        p = np.exp(logits - logits.max())
        kind = ("MOVE", "TALK", "WORK", "REST")[rng.choice(4, p=p / p.sum())]
        if rng.random() < 0.03:  # a little realistic garbage
            return "hmm... " * 3
        if kind == "MOVE" and places:
            return f"MOVE {rng.choice(places.group(1).split(', '))}"
        if kind == "TALK":
            phrases = FRIENDLY if s["A"] + rng.normal(0, 0.3) > 0 else BLUNT
            return f"TALK {rng.choice(others)}: {rng.choice(phrases)}"
        if kind == "WORK":
            return f"WORK: {rng.choice(WORK)}"
        return "REST"
