"""What each action does to the world: resources, ties, invitations, news, memories.

`Rules.apply` is the single place an action changes state. It is deterministic (no
randomness, no model), returns everything the engine logs (success, reason, the
interactions with their witnesses, the memories to store) and whether the addressee of
a TALK gets a turn to reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steertown.world import economy
from steertown.world.actions import Action, apply_action
from steertown.world.goals import spec_of
from steertown.world.residents import Agent
from steertown.world.social import NEWS, Ties
from steertown.world.town import Town

IMPORTANCE = {"MOVE": 2.0, "TALK": 5.0, "WORK": 4.0, "REST": 1.0, "HEARD": 5.0, "PLAN": 8.0,
              "HELP": 6.0, "INVITE": 6.0, "ACCEPT": 6.0, "NEWS": 7.0, "FAIL": 2.0}


@dataclass
class Outcome:
    success: bool
    reason: str
    location_after: str
    interactions: list[dict] = field(default_factory=list)  # type, actor, target, amount, detail
    memories: list[tuple[str, str, float]] = field(default_factory=list)  # agent, text, importance
    reply_by: str = ""  # agent id of a TALK's addressee, who gets a turn to reply


class Rules:
    """The world's rules over a population (agents are mutated in place)."""

    def __init__(self, town: Town, agents: list[Agent], ties: Ties):
        self.town = town
        self.by_id = {a.agent_id: a for a in agents}
        self.ties = ties

    def visit(self, agent: Agent, place: str) -> None:
        """Record a visit to a public place (explore goals count these)."""
        if not place.startswith("home_") and place not in agent.visited:
            agent.visited.append(place)

    def apply(self, agent: Agent, action: Action, present: list[str], occupancy: dict[str, int],
              tick: int) -> Outcome:
        """Apply `action` by `agent`; `present` = ids of the others in its encounter.

        A pending invitation is consumed by the invitee's next decision, accepted or not.
        """
        invite, agent.invite = agent.invite, {}
        where = agent.location
        names = {self.by_id[o].name: o for o in present}
        target = names.get(action.target, "")
        kind = action.action_type
        reason = action.failure_reason if not action.parsed else economy.check_energy(agent, kind)
        if not reason and kind in ("HELP", "INVITE") and not target:
            reason = f"{action.target or 'nobody'} is not here"
        if not reason and kind == "ACCEPT" and not invite:
            reason = "no invitation to accept"
        if reason:
            return self._fail(agent, kind, where, reason)
        if kind in ("MOVE", "TALK"):
            ok, reason, after = apply_action(action, where, not present, self.town, occupancy)
            if not ok:
                return self._fail(agent, kind, where, reason)
            if kind == "MOVE":
                agent.location = after
                self.visit(agent, after)
                return Outcome(True, "", after, memories=[
                    (agent.agent_id, f"I went from {where} to {after}.", IMPORTANCE["MOVE"])])
            return self._talk(agent, action, target, present, tick)
        if kind == "WORK":
            if not economy.has_job(where):
                return self._fail(agent, kind, where, "no job here")
            coins = economy.work(agent, where)
            what = action.text or self.town.locations[where].work
            return Outcome(True, "", where, memories=[
                (agent.agent_id, f"I worked at {where} ({coins} coins): {what}",
                 IMPORTANCE["WORK"])])
        if kind == "REST":
            gain = economy.rest(agent)
            return Outcome(True, "", where, memories=[
                (agent.agent_id, f"I rested at {where} (+{gain} energy).", IMPORTANCE["REST"])])
        if kind == "HELP":
            return self._help(agent, self.by_id[target], present)
        if kind == "INVITE":
            return self._invite(agent, self.by_id[target], action.text, present, tick)
        return self._accept(agent, invite, occupancy, present)

    def end_tick(self, acted: set[str]) -> None:
        """Between ticks: agents who took no turn in the tick recover a little energy."""
        for agent_id, agent in self.by_id.items():
            if agent_id not in acted:
                economy.recover(agent)

    def _fail(self, agent: Agent, kind: str, where: str, reason: str) -> Outcome:
        agent.failures += 1
        return Outcome(False, reason, where, memories=[
            (agent.agent_id, f"I tried to {kind.lower()} at {where} but failed ({reason}).",
             IMPORTANCE["FAIL"])])

    def _row(self, kind: str, actor: Agent, target: str, present: list[str], amount: float = 0.0,
             detail: str = "") -> dict:
        return {"type": kind, "actor": actor.agent_id, "target": target,
                "witnesses": sorted(p for p in present if p != target), "amount": amount,
                "detail": detail}

    def _talk(self, agent: Agent, action: Action, target: str, present: list[str],
              tick: int) -> Outcome:
        economy.spend(agent, "TALK")
        where = agent.location
        out = Outcome(True, "", where, reply_by=target)
        out.interactions.append(self._row("TALK", agent, target, present))
        to = self.by_id[target].name if target else "everyone"
        out.memories.append((agent.agent_id, f"I said to {to} at {where}: {action.text}",
                             IMPORTANCE["TALK"]))
        for o in present:
            out.memories.append((o, f"{agent.name} said at {where}: {action.text}",
                                 IMPORTANCE["HEARD"]))
        if target:
            self.ties.strengthen(agent.agent_id, target, "TALK")
        # News passes to everyone who hears a knower talk: the addressee and the witnesses
        # (only the addressee, before the pilot: news reached 6 of 32 in 30 ticks).
        if agent.knows_news:
            for o in present:
                listener = self.by_id[o]
                if not listener.knows_news:
                    listener.news_from, listener.news_tick = agent.agent_id, tick
                    out.interactions.append(self._row("NEWS", agent, o, present))
                    out.memories.append((o, f"{agent.name} told me: {NEWS}.", IMPORTANCE["NEWS"]))
        return out

    def _help(self, agent: Agent, other: Agent, present: list[str]) -> Outcome:
        resource, amount, reason = economy.help_other(agent, other)
        if reason:
            return self._fail(agent, "HELP", agent.location, reason)
        self.ties.strengthen(agent.agent_id, other.agent_id, "HELP")
        return Outcome(True, "", agent.location,
                       [self._row("HELP", agent, other.agent_id, present, amount, resource)],
                       [(agent.agent_id, f"I gave {other.name} {amount} {resource}.",
                         IMPORTANCE["HELP"]),
                        (other.agent_id, f"{agent.name} gave me {amount} {resource}.",
                         IMPORTANCE["HELP"])])

    def _invite(self, agent: Agent, other: Agent, place: str, present: list[str],
                tick: int) -> Outcome:
        economy.spend(agent, "INVITE")
        other.invite = {"from": agent.agent_id, "place": place, "tick": tick}
        self.ties.strengthen(agent.agent_id, other.agent_id, "INVITE")
        # The invitee answers at once (a reply turn offering Accept), not at a decision some
        # ticks later when the inviter has left: before the pilot no invitation was accepted.
        return Outcome(
            True, "", agent.location,
            [self._row("INVITE", agent, other.agent_id, present, detail=place)],
            [(agent.agent_id, f"I invited {other.name} to {place}.", IMPORTANCE["INVITE"]),
             (other.agent_id, f"{agent.name} invited me to {place}.", IMPORTANCE["INVITE"])],
            reply_by=other.agent_id)

    def _accept(self, agent: Agent, invite: dict, occupancy: dict[str, int],
                present: list[str]) -> Outcome:
        place, host = invite["place"], self.by_id[invite["from"]]
        where = agent.location
        if place != where:
            if occupancy.get(place, 0) >= self.town.locations[place].capacity:
                return self._fail(agent, "ACCEPT", where, f"{place} is full")
            occupancy[where] -= 1
            occupancy[place] = occupancy.get(place, 0) + 1
            agent.location = place
            self.visit(agent, place)
        if place == spec_of(host).place:
            host.gathered += 1
        self.ties.strengthen(agent.agent_id, host.agent_id, "ACCEPT")
        return Outcome(True, "", place,
                       [self._row("ACCEPT", agent, host.agent_id, present, detail=place)],
                       [(agent.agent_id, f"I accepted {host.name}'s invitation to {place}.",
                         IMPORTANCE["ACCEPT"]),
                        (host.agent_id, f"{agent.name} came to {place} as I invited.",
                         IMPORTANCE["ACCEPT"])])
