"""What each Big Five trait is expected to do to an agent's decisions, stated before measuring.

Written from the traits' definitions (Extraversion: seeks company; Agreeableness:
cooperates; Conscientiousness: diligent; Openness: seeks novelty; Neuroticism: withdraws,
tires), not from any run's numbers, and committed before the verdict reported any
number against it (issue 19). Keys are decision option classes (`storage.schema.
option_class`: the option's first word). +1: the trait should raise P(class); -1: lower it.

The verdict reports P(class) per unit coefficient per trait against this table as
congruent / contrary / null (CI containing 0). It is reported, not required: if this
model's Openness vector makes agents talk rather than explore, the report says so.
"""

from __future__ import annotations

EXPECTED: dict[str, dict[str, int]] = {
    "E": {"talk": +1, "invite": +1, "rest": -1},
    "A": {"help": +1, "accept": +1},
    "C": {"work": +1, "rest": -1},
    "O": {"move": +1},
    "N": {"rest": +1},
}


def expectation(trait: str, option_class: str) -> int:
    """+1 (expected to raise), -1 (expected to lower), 0 (no stated expectation)."""
    return EXPECTED.get(trait, {}).get(option_class, 0)


def agreement(trait: str, option_class: str, ci_low: float, ci_high: float) -> str:
    """"congruent" / "contrary" / "null" (CI contains 0) for a stated expectation, or
    "unstated" where the table says nothing about this trait and class."""
    sign = expectation(trait, option_class)
    if sign == 0:
        return "unstated"
    if ci_low <= 0 <= ci_high:
        return "null"
    effect = 1 if ci_low > 0 else -1
    return "congruent" if effect == sign else "contrary"
