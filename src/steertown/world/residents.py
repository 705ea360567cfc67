"""Agents: identity, Big Five profile sampled from the run seed, mutable state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steertown.config import TRAITS, RunConfig, agent_ids

# Starting resources (world.economy's rules move them from here).
START_COINS = 5
MAX_ENERGY = 10
START_ENERGY = MAX_ENERGY

FIRST_NAMES = (
    "Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "June", "Kai", "Lena",
    "Milo", "Nia", "Omar", "Pia", "Quin", "Rosa", "Sam", "Tess", "Uma", "Vik", "Wren", "Xena",
    "Yuri", "Zoe",
)
GOALS = (
    "organise a town picnic next weekend",
    "write a collaborative brief about the new library hours",
    "find volunteers for the community garden",
    "learn what neighbours think about the market moving",
    "finish a painting for the cafe wall",
    "plan a workshop on fixing bicycles",
    "collect stories about the town's history",
    "start a weekly reading circle",
)


@dataclass
class Agent:
    agent_id: str
    name: str
    home: str
    goal: str
    traits: dict[str, float]  # assigned coefficients in [-1, 1]
    location: str
    plan: str = ""
    last_reflection_tick: int = 0
    failures: int = field(default=0)
    # World state (rules in steertown.world): resources, goal counters, news, invitation.
    coins: int = START_COINS
    energy: int = START_ENERGY
    earned: int = 0  # coins earned by work, cumulative
    visited: list[str] = field(default_factory=list)  # public places visited, in order
    gathered: int = 0  # accepted invitations to this agent's goal place
    goal_done_tick: int = 0  # first tick the goal's target was reached (0 = not yet)
    news_from: str = ""  # who told this agent the news ("seed" at tick 0)
    news_tick: int = -1  # when it learned the news (-1 = does not know it)
    invite: dict = field(default_factory=dict)  # pending: {"from", "place", "tick"}

    @property
    def knows_news(self) -> bool:
        return self.news_tick >= 0

    def steering(self, strength: float, enabled: bool) -> dict[str, float]:
        """Effective alphas this agent generates with (0 when steering is off)."""
        if not enabled:
            return {t: 0.0 for t in TRAITS}
        return {t: round(strength * self.traits[t], 6) for t in TRAITS}

    def to_state(self) -> dict:
        return {k: getattr(self, k) for k in MUTABLE_FIELDS}

    def load_state(self, state: dict) -> None:
        for k in MUTABLE_FIELDS:
            setattr(self, k, state[k])


# Everything a checkpoint must carry for an agent (the rest is rebuilt from the seed).
MUTABLE_FIELDS = ("location", "plan", "last_reflection_tick", "failures", "coins", "energy",
                  "earned", "visited", "gathered", "goal_done_tick", "news_from", "news_tick",
                  "invite")


def sample_population(cfg: RunConfig) -> list[Agent]:
    """Create `cfg.population` agents; profiles ~ N(mean=coefficients, sd=spread), clipped.

    Reproducible from `cfg.seed` alone, so a resumed run rebuilds the same agents.
    """
    rng = np.random.default_rng([cfg.seed, 0xA6E])
    n = cfg.population
    means = np.array([cfg.steering.coefficients[t] for t in TRAITS])
    profiles = np.clip(rng.normal(means, cfg.steering.spread, size=(n, len(TRAITS))), -1.0, 1.0)
    goals = rng.integers(0, len(GOALS), size=n)
    # Per-agent interventions replace sampled values after sampling, so every other agent
    # (and every other draw) stays what it was without the intervention.
    ids = agent_ids(n)
    for i, agent_id in enumerate(ids):
        for t, v in cfg.steering.agents.get(agent_id, {}).items():
            profiles[i, TRAITS.index(t)] = v
    num_homes = max(1, (n + 1) // 2)  # two agents per household
    agents = []
    for i in range(n):
        name = f"{FIRST_NAMES[i % len(FIRST_NAMES)]}"
        if i >= len(FIRST_NAMES):
            name += f" {i // len(FIRST_NAMES) + 1}"
        home = f"home_{i % num_homes}"
        agents.append(Agent(
            agent_id=ids[i], name=name, home=home, goal=GOALS[goals[i]],
            traits={t: round(float(profiles[i, j]), 4) for j, t in enumerate(TRAITS)},
            location=home,
        ))
    return agents
