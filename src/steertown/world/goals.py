"""Goals with measurable targets: each goal text maps to a kind, a target and a place.

- earn: coins earned by work (cumulative, not holdings)
- befriend: ties at or above the friendship threshold
- explore: distinct public places visited
- gather: accepted invitations to the goal's place (a gathering organised)
The place is also where the agent invites others to.
"""

from __future__ import annotations

from dataclasses import dataclass

from steertown.world.residents import GOALS, Agent
from steertown.world.social import Ties


@dataclass(frozen=True)
class GoalSpec:
    kind: str  # earn | befriend | explore | gather
    target: int
    place: str

    def describe(self) -> str:
        """The target as a short phrase for prompts and reports."""
        return {"earn": f"earn {self.target} coins",
                "befriend": f"make {self.target} friends",
                "explore": f"visit {self.target} places",
                "gather": f"get {self.target} people to {self.place}"}[self.kind]


# Sized for a study run (40 ticks, about 15 turns per agent at 12 events per tick for 32
# agents): reachable by an agent who pursues it, not by one who does not (docs/world.md).
GOAL_SPECS: dict[str, GoalSpec] = dict(zip(GOALS, (
    GoalSpec("gather", 2, "park"),              # organise a town picnic
    GoalSpec("earn", 10, "library"),            # write a brief about the library hours
    GoalSpec("befriend", 2, "park"),            # find volunteers for the garden
    GoalSpec("befriend", 2, "market"),          # learn what neighbours think
    GoalSpec("earn", 10, "cafe"),               # finish a painting for the cafe wall
    GoalSpec("gather", 2, "community_center"),  # plan a bicycle workshop
    GoalSpec("explore", 3, "town_square"),      # collect stories about the town
    GoalSpec("gather", 2, "library"),           # start a reading circle
), strict=True))


def spec_of(agent: Agent) -> GoalSpec:
    return GOAL_SPECS[agent.goal]


def goal_value(agent: Agent, ties: Ties) -> int:
    """The agent's current count towards its goal's target."""
    spec = spec_of(agent)
    if spec.kind == "earn":
        return agent.earned
    if spec.kind == "befriend":
        return ties.friends(agent.agent_id)
    if spec.kind == "explore":
        return len(agent.visited)
    return agent.gathered


def update_goal(agent: Agent, ties: Ties, tick: int, friends: dict[str, int] | None = None
                ) -> float:
    """Progress in [0, 1]; sets `goal_done_tick` the first tick the target is reached.

    `friends` (from Ties.friend_counts) avoids a scan of all ties per agent.
    """
    spec = spec_of(agent)
    if spec.kind == "befriend" and friends is not None:
        value = friends.get(agent.agent_id, 0)
    else:
        value = goal_value(agent, ties)
    progress = min(1.0, value / spec.target)
    if progress >= 1.0 and agent.goal_done_tick == 0:
        agent.goal_done_tick = tick
    return progress
