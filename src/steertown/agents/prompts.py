"""Prompts. The persona never names traits: personality comes from steering only.

The system part is stable per agent (so its KV cache can be reused across ticks); the
user part carries the tick's situation.
"""

from __future__ import annotations

from steertown.agents.profile import Agent
from steertown.world.town import Town

# The reply format as a short worked example, not as placeholders: a 135M model copies
# "<place>" and "<what you say>" literally and answers like an assistant. The example sits
# in the system prompt, which is the per-agent prefix whose KV is cached across ticks.
# No trait words: the example lines are plain and neutral.
ACTION_FORMAT = (
    "Each turn you answer with one line, for example:\n"
    "Talk Ben: Ben, are you coming to the market later?\n"
    "Move park\n"
    "Work: I stack the chairs and sweep the floor.\n"
    "Rest\n"
    "Say what you say or do yourself, in one short sentence."
)
# The Work option is a first-person prefix: the model continues "Work: I ..." with what it
# does, instead of addressing a "you" like an assistant.
WORK_OPTION = "Work: I"


def persona(agent: Agent) -> str:
    """The stable system prompt of an agent (no trait adjectives)."""
    return (f"You are {agent.name}, who lives in a small town (home: {agent.home}). "
            f"Your goal: {agent.goal}.\n{ACTION_FORMAT}")


def action_options(agent: Agent, town: Town, others: list[str]) -> tuple[str, ...]:
    """The replies the world allows here (the backend constrains the reply's start to them).

    Capitalised keywords are single tokens in SmolLM2's vocabulary.
    """
    places = town.public_neighbours(agent.location)
    if agent.home in town.neighbours(agent.location):
        places.append(agent.home)
    return (*(f"Move {p}" for p in places), *(f"Talk {o}:" for o in others), WORK_OPTION, "Rest")


def _quoted(line: str) -> str:
    """'Ben: hello' -> 'Ben said: "hello"' (quoting keeps the words apart from the format)."""
    who, sep, what = line.partition(": ")
    return f'{who} said: "{what}"' if sep else line


def action_prompt(agent: Agent, town: Town, others: list[str], transcript: list[str],
                  memories: list[str], tick: int) -> str:
    """The per-tick situation an agent acts on."""
    loc = town.locations[agent.location]
    lines = [f"You are at {loc.name}: {loc.description}. Work here: {loc.work}."]
    lines.append(f"Here with you: {', '.join(others)}." if others else "You are alone here.")
    lines.append(f"Places next to you: {', '.join(town.public_neighbours(agent.location))}"
                 + (f", {agent.home}." if agent.home in town.neighbours(agent.location) else "."))
    if transcript:
        lines.append("Recently said here:\n" + "\n".join(f"- {_quoted(t)}" for t in transcript))
    if memories:
        lines.append("You remember:\n" + "\n".join(f"- {m}" for m in memories))
    if agent.plan:
        lines.append(f"Your plan: {agent.plan}")
    lines.append(f"Now you can {_choices(agent, town, others)}. What do you do?")
    return "\n".join(lines)


def _choices(agent: Agent, town: Town, others: list[str]) -> str:
    """The options in words, people first: the model weighs what it is told it can do."""
    places = town.public_neighbours(agent.location)
    if agent.home in town.neighbours(agent.location):
        places.append("home")
    out = [f"talk to {' or '.join(others)}"] if others else []
    out += [f"go to {' or '.join(places)}", f"{town.locations[agent.location].work}", "rest"]
    return ", ".join(out[:-1]) + " or " + out[-1]


def reflection_prompt(agent: Agent, memories: list[str], tick: int) -> str:
    """Ask for a short plan from the agent's most relevant memories."""
    mem = "\n".join(f"- {m}" for m in memories) or "- nothing notable yet"
    return (f"Time: tick {tick}. Think about what happened recently:\n{mem}\n"
            f"In one or two sentences, what is your plan for the next hours?")


def reflection_persona(agent: Agent) -> str:
    """System prompt for reflections: persona without the action format."""
    return (f"You are {agent.name}, who lives in a small town (home: {agent.home}). "
            f"Your goal: {agent.goal}.")
