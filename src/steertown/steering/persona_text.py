"""The prompting baseline: an agent's coefficients rendered as persona text.

`steering.mode=prompt` gives the model the same profile that vectors would inject, as
words in the system prompt and with no vectors. This module is the only place where
trait words may enter a prompt (agents.prompts never names traits).

Rendering: per trait, the sign of the effective alpha picks the pole and |alpha| the
intensity word; |alpha| below `NEUTRAL_BELOW` says nothing (an average trait is not
worth a sentence, and saying "average" would itself be a cue).
"""

from __future__ import annotations

from collections.abc import Mapping

from steertown.config import TRAITS

# (high pole, low pole) per trait, in plain Big Five adjectives.
POLES: dict[str, tuple[str, str]] = {
    "E": ("outgoing, talkative and sociable", "reserved, quiet and solitary"),
    "A": ("warm, kind and cooperative", "critical, blunt and uncooperative"),
    "C": ("organised, diligent and dependable", "careless, disorganised and impulsive"),
    "O": ("curious, imaginative and open to new ideas", "conventional, practical and set in your ways"),
    "N": ("anxious, moody and easily stressed", "calm, relaxed and emotionally stable"),
}
NEUTRAL_BELOW = 0.15
# Upper bounds of |alpha| for each intensity word; anything larger is "extremely".
INTENSITY: tuple[tuple[float, str], ...] = ((0.4, "somewhat"), (0.75, "quite"), (1.25, "very"))
HEADER = "Your personality: you are "


def intensity(magnitude: float) -> str:
    """The adverb for |alpha| (callers skip magnitudes below NEUTRAL_BELOW)."""
    for bound, word in INTENSITY:
        if magnitude < bound:
            return word
    return "extremely"


def describe(alphas: Mapping[str, float]) -> str:
    """One sentence describing the profile, or "" when every trait is near zero."""
    parts = []
    for t in TRAITS:
        a = float(alphas.get(t, 0.0))
        if abs(a) < NEUTRAL_BELOW:
            continue
        high, low = POLES[t]
        parts.append(f"{intensity(abs(a))} {high if a > 0 else low}")
    return HEADER + "; ".join(parts) + "." if parts else ""


def with_persona_text(system: str, alphas: Mapping[str, float]) -> str:
    """`system` with the profile sentence after its first line (the identity), before any
    reply-format instructions; unchanged for a neutral profile."""
    text = describe(alphas)
    if not text:
        return system
    first, _, rest = system.partition("\n")
    return f"{first}\n{text}" + (f"\n{rest}" if rest else "")
