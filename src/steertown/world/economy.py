"""Resources: coins earned by work, energy spent by work and talk, restored by rest.

Every rule is a small deterministic function of the agents' state, so an action's effect
is the same in a resumed run and testable without a model.
"""

from __future__ import annotations

from steertown.world.residents import MAX_ENERGY, Agent
from steertown.world.residents import START_COINS as START_COINS  # the rules read them here too
from steertown.world.residents import START_ENERGY as START_ENERGY

# Coins one WORK earns at a place's job. Homes have no job: an agent at home goes out to
# work (and meets people) instead of doing chores alone (pilot: work was 47% of actions).
PAY = {"cafe": 3, "market": 3, "library": 2, "community_center": 2, "park": 2,
       "town_square": 2}
ENERGY_COST = {"WORK": 2, "TALK": 1, "HELP": 1, "INVITE": 1}
REST_GAIN = 4
HELP_COINS = 2  # what one HELP gives (coins if the helper has them)
HELP_ENERGY = 2  # ... otherwise energy, if the helper can spare it
# An agent who takes no turn in a tick recovers this much energy (time passes). Agents act
# about once in three ticks, so without it a town that works collapses to energy ~2 (pilot).
IDLE_RECOVERY = 1


def has_job(place: str) -> bool:
    """Whether WORK is possible at `place` (public places have jobs; homes do not)."""
    return place in PAY


def pay_at(place: str) -> int:
    """Coins a WORK earns at `place` (0 where there is no job)."""
    return PAY.get(place, 0)


def check_energy(agent: Agent, action_type: str) -> str:
    """'' if the agent has the energy the action needs, else the failure reason."""
    need = ENERGY_COST.get(action_type, 0)
    return "" if agent.energy >= need else f"too tired (energy {agent.energy} < {need})"


def spend(agent: Agent, action_type: str) -> None:
    """Take the action's energy cost."""
    agent.energy -= ENERGY_COST.get(action_type, 0)


def work(agent: Agent, place: str) -> int:
    """Earn the place's pay (energy already checked); returns the coins earned."""
    coins = pay_at(place)
    spend(agent, "WORK")
    agent.coins += coins
    agent.earned += coins
    return coins


def recover(agent: Agent) -> int:
    """An idle tick's recovery (up to the maximum); returns the energy gained."""
    gain = min(IDLE_RECOVERY, MAX_ENERGY - agent.energy)
    agent.energy += gain
    return gain


def rest(agent: Agent) -> int:
    """Restore energy up to the maximum; returns the energy gained."""
    gain = min(REST_GAIN, MAX_ENERGY - agent.energy)
    agent.energy += gain
    return gain


def help_other(helper: Agent, target: Agent) -> tuple[str, int, str]:
    """Give the target coins, or energy when the helper has no coins to spare.

    Returns (resource, amount, failure reason); amount 0 means nothing was given.
    """
    if helper.coins >= HELP_COINS:
        helper.coins -= HELP_COINS
        target.coins += HELP_COINS
        spend(helper, "HELP")
        return "coins", HELP_COINS, ""
    spare = helper.energy - ENERGY_COST["HELP"]
    room = MAX_ENERGY - target.energy
    amount = min(HELP_ENERGY, spare, room)
    if amount <= 0:
        return "energy", 0, "nothing to give"
    spend(helper, "HELP")
    helper.energy -= amount
    target.energy += amount
    return "energy", amount, ""
