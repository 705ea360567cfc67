"""Ties between agents and the spread of one piece of news.

Ties are symmetric weights in [0, 1], raised by interactions (a talk, a help, an
invitation, an accepted invitation); a tie at or above FRIEND_THRESHOLD counts as a
friendship for goals. News is known by a few seeded agents at tick 0 and passes to
whoever a knower talks to: who knows it, from whom and when is recorded per agent.
"""

from __future__ import annotations

import numpy as np

# A talk and its reply make a friendship (0.2 + 0.2 >= FRIEND_THRESHOLD): at about 15 turns
# per agent in a study run, four exchanges with one person (gain 0.1) almost never happened.
TIE_GAIN = {"TALK": 0.2, "HELP": 0.25, "INVITE": 0.1, "ACCEPT": 0.2}
FRIEND_THRESHOLD = 0.4
NEWS = "the old mill by the river will reopen as a workshop next month"


def _key(a: str, b: str) -> str:
    return f"{a}|{b}" if a < b else f"{b}|{a}"


class Ties:
    """Pairwise tie weights, stored once per unordered pair."""

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}

    def strengthen(self, a: str, b: str, kind: str) -> float:
        """Raise the tie between `a` and `b` by the gain of `kind`; returns the new weight."""
        if a == b:
            return self.weight(a, b)
        k = _key(a, b)
        w = round(min(1.0, self.weights.get(k, 0.0) + TIE_GAIN[kind]), 6)
        self.weights[k] = w
        return w

    def weight(self, a: str, b: str) -> float:
        return self.weights.get(_key(a, b), 0.0)

    def friends(self, agent_id: str) -> int:
        """Number of ties of `agent_id` at or above the friendship threshold."""
        return sum(1 for k, w in self.weights.items()
                   if w >= FRIEND_THRESHOLD and agent_id in k.split("|"))

    def friend_counts(self) -> dict[str, int]:
        """Friendships per agent (agents without any are absent)."""
        out: dict[str, int] = {}
        for k, w in self.weights.items():
            if w >= FRIEND_THRESHOLD:
                for a in k.split("|"):
                    out[a] = out.get(a, 0) + 1
        return out

    def edges(self) -> list[tuple[str, str, float]]:
        """(a, b, weight) for every pair that has interacted, sorted."""
        return [(*k.split("|"), w) for k, w in sorted(self.weights.items())]

    def to_state(self) -> dict[str, float]:
        return dict(sorted(self.weights.items()))

    def load_state(self, state: dict[str, float]) -> None:
        self.weights = dict(state)


def seed_news(agent_ids: list[str], knowers: int, seed: int) -> list[str]:
    """The agents who know the news at tick 0 (reproducible from the run seed)."""
    rng = np.random.default_rng([seed, 0x4E5])
    k = min(knowers, len(agent_ids))
    return sorted(agent_ids[i] for i in rng.choice(len(agent_ids), size=k, replace=False))
