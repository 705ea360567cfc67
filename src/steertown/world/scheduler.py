"""Encounter scheduling: which agents act this tick, and with whom."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass
class Encounter:
    event_id: int
    location: str
    actor: str  # the agent who acts (one generation per event)
    others: list[str]  # 0-2 co-located agents taking part: addressees and witnesses
    # A reply turn: the agent being answered, the line said to the actor, and how many
    # lines the exchange already has (bounded by the engine).
    answering: str = ""
    line: str = ""
    depth: int = 0

    def to_state(self) -> dict:
        return {"location": self.location, "actor": self.actor, "others": self.others,
                "answering": self.answering, "line": self.line, "depth": self.depth}


def schedule_encounters(locations: dict[str, str], max_events: int,
                        rng: np.random.Generator) -> list[Encounter]:
    """Sample at most `max_events` encounters of 1-3 co-located agents.

    One agent acts per encounter; the others are whom it meets. `locations` maps agent id -> location. Each agent is in at most one encounter per
    tick. The rng is derived from (seed, tick), so schedules are reproducible and a
    resumed run schedules exactly what an uninterrupted one would.
    """
    by_place: dict[str, list[str]] = defaultdict(list)
    for agent_id in sorted(locations):
        by_place[locations[agent_id]].append(agent_id)
    groups: list[tuple[str, list[str]]] = []
    for place in sorted(by_place):
        ids = by_place[place]
        order = rng.permutation(len(ids))
        i = 0
        while i < len(ids):
            size = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
            groups.append((place, [ids[j] for j in order[i:i + size]]))
            i += size
    pick = rng.permutation(len(groups))
    out: list[Encounter] = []
    for j in pick[:max_events]:
        place, members = groups[j]
        out.append(Encounter(event_id=len(out), location=place, actor=members[0],
                             others=sorted(members[1:])))
    return out
