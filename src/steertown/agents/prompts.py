"""Prompts. The persona never names traits: personality comes from steering only.

The system part is stable per agent (so its KV cache can be reused across ticks); the
user part carries the tick's situation.
"""

from __future__ import annotations

from steertown.world import economy
from steertown.world.goals import spec_of
from steertown.world.residents import Agent
from steertown.world.town import Town

ACCEPT_OPTION = "Accept invite"

# The reply format as a short worked example, not as placeholders: a 135M model copies
# "<place>" and "<what you say>" literally and answers like an assistant. The example sits
# in the system prompt, which is the per-agent prefix whose KV is cached across ticks.
# No trait words: the example lines are plain and neutral.
EXAMPLE_TALK = "Ben, are you coming to the market later?"
EXAMPLE_WORK = "I stack the chairs and sweep the floor."
ACTION_FORMAT = (
    "Each turn you answer with one line, for example:\n"
    f"Talk Ben: {EXAMPLE_TALK}\n"
    "Move park\n"
    f"Work: {EXAMPLE_WORK}\n"
    "Invite Ben to park\n"
    "Help Ben\n"
    "Rest\n"
    "Say what you say or do yourself, in one short sentence."
)
# The Work option is a first-person prefix: the model continues "Work: I ..." with what it
# does, instead of addressing a "you" like an assistant (it continues: it has a ':').
WORK_OPTION = "Work: I"


def persona(agent: Agent) -> str:
    """The stable system prompt of an agent (no trait adjectives)."""
    return (f"You are {agent.name}, who lives in a small town (home: {agent.home}). "
            f"Your goal: {agent.goal} ({spec_of(agent).describe()}).\n{ACTION_FORMAT}")


def action_options(agent: Agent, town: Town, others: list[str], inviter: str = ""
                   ) -> tuple[str, ...]:
    """The replies the world allows here (the backend constrains the reply's start to them).

    Capitalised keywords are single tokens in SmolLM2's vocabulary. `inviter`: this turn
    answers that agent's invitation just made, so the answer is to accept it or to talk
    back to the inviter (declining is said, not slept on: with Rest offered too, 4 of 9
    invitations were accepted in the pilot, under 1% of actions). Too tired to talk, the
    invitee can still rest.
    """
    if inviter and agent.invite:
        talk = not economy.check_energy(agent, "TALK")
        return (ACCEPT_OPTION, f"Talk {inviter}:" if talk else "Rest")
    places = town.public_neighbours(agent.location)
    if agent.home in town.neighbours(agent.location):
        places.append(agent.home)
    place = spec_of(agent).place
    # What the agent's energy does not allow is not offered (Rest always is).
    def able(kind: str, people: list[str] = ()) -> list[str]:
        return list(people) if not economy.check_energy(agent, kind) else []

    return (*(f"Move {p}" for p in places), *(f"Talk {o}:" for o in able("TALK", others)),
            *(f"Help {o}" for o in able("HELP", others)),
            *(f"Invite {o} to {place}" for o in able("INVITE", others)),
            *((ACCEPT_OPTION,) if agent.invite else ()),
            *((WORK_OPTION,) if economy.has_job(agent.location)
              and able("WORK", [WORK_OPTION]) else ()), "Rest")


def action_prompt(agent: Agent, town: Town, others: list[str], transcript: list[str],
                  memories: list[str], tick: int, inviter: str = "",
                  answering: tuple[str, str] | None = None) -> str:
    """The per-tick situation an agent acts on.

    `inviter`: name of who invited the agent (its invitation is pending);
    `answering`: (speaker name, line) when this turn is a reply to what was said to it.
    """
    loc = town.locations[agent.location]
    # Short on purpose: every token here is paid on every action prompt. Early in the prompt
    # and without the word "Work", which the model otherwise copies (measured: Work's share of
    # the first-token probability 0.81 with a late "Work here:" line, 0.39 like this).
    job = (f" The job here is to {loc.work} ({economy.pay_at(loc.name)} coins)."
           if economy.has_job(loc.name) else "")
    lines = [f"Time: tick {tick}. You are at {loc.name}: {loc.description}.{job} You have "
             f"{agent.coins} coins and energy {agent.energy}/{economy.MAX_ENERGY}."]
    lines.append(f"Here with you: {', '.join(others)}." if others else "You are alone here.")
    if inviter:
        lines.append(f"{inviter} invited you to {agent.invite['place']} ({ACCEPT_OPTION}).")
    if answering:
        lines.append(f'{answering[0]} said to you: "{answering[1]}"')
    lines.append(f"Places next to you: {', '.join(town.public_neighbours(agent.location))}"
                 + (f", {agent.home}." if agent.home in town.neighbours(agent.location) else "."))
    if transcript:
        lines.append("Recently said here:\n" + "\n".join(f"- {_quoted(t)}" for t in transcript))
    if memories:
        lines.append("You remember:\n" + "\n".join(f"- {m}" for m in memories))
    if agent.plan:
        lines.append(f"Your plan: {agent.plan}")
    # The closing question names the social moves the options offer. "Invite" is two tokens
    # ("Inv", "ite") where the others are one: unnamed, it was never chosen (pilot, 0 of 144).
    invite = (f", invite {' or '.join(others)} to {spec_of(agent).place}"
              if not economy.check_energy(agent, "INVITE") else "")
    if inviter:
        lines.append(f"Do you accept {inviter}'s invitation, or do something else?")
    else:
        lines.append(f"Do you talk to {' or '.join(others)}{invite}, or do something else?"
                     if others else "What do you do now?")
    return "\n".join(lines)


def _quoted(line: str) -> str:
    """'Ben: hello' -> 'Ben said: "hello"' (quoting keeps the words apart from the format)."""
    who, sep, what = line.partition(": ")
    return f'{who} said: "{what}"' if sep else line


def reflection_prompt(agent: Agent, memories: list[str], tick: int) -> str:
    """Ask for a short plan from the agent's most relevant memories."""
    mem = "\n".join(f"- {m}" for m in memories) or "- nothing notable yet"
    return (f"Time: tick {tick}. Think about what happened recently:\n{mem}\n"
            f"In one or two sentences, what is your plan for the next hours?")


def reflection_persona(agent: Agent) -> str:
    """System prompt for reflections: persona without the action format."""
    return (f"You are {agent.name}, who lives in a small town (home: {agent.home}). "
            f"Your goal: {agent.goal}.")
