"""Actions: parse a model reply into one action, then apply it to the world.

Unparseable output is never a crash: it becomes a failed action with the reason and a
REST fallback, and the raw text is still logged as the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steertown.world.town import Town

ACTION_WORDS = ("MOVE", "TALK", "WORK", "REST", "HELP", "INVITE", "ACCEPT")
_WORDS = "|".join(ACTION_WORDS)
_ACTION_RE = re.compile(rf"\b({_WORDS})\b", re.IGNORECASE)
_START_RE = re.compile(rf"({_WORDS})", re.IGNORECASE)
_LEAD_RE = re.compile(r"^[\s>*`\"'#:\-]*(?:action\s*[:\-]\s*)?", re.IGNORECASE)


@dataclass
class Action:
    action_type: str  # one of ACTION_WORDS
    target: str = ""  # location for MOVE, addressee for TALK/HELP/INVITE, inviter for ACCEPT
    text: str = ""  # what is said (TALK) or done (WORK); the place for INVITE
    parsed: bool = True
    failure_reason: str = ""


def parse_action(reply: str, here: list[str], town: Town) -> Action:
    """Parse the first action in `reply`. `here` = names of the others present."""
    text = _LEAD_RE.sub("", reply.strip())
    m = _START_RE.match(text) or _ACTION_RE.search(text)  # a reply starts with its keyword
    if not text or not m or m.start() > 40:
        reason = "empty reply" if not text else f"no action keyword ({'/'.join(ACTION_WORDS)})"
        return Action("REST", parsed=False, failure_reason=reason)
    kind = m.group(1).upper()
    rest = text[m.end():].lstrip(" :-,.").split("\n", 1)[0].strip()
    if kind == "MOVE":
        target = _find_location(rest, town)
        if target is None:
            return Action("MOVE", text=rest, parsed=False,
                          failure_reason="MOVE without a known location")
        return Action("MOVE", target=target)
    if kind == "TALK":
        target, said = "", rest
        if ":" in rest:
            who, said = rest.split(":", 1)
            target = _find_name(who, here) or ""
            said = said.strip()
        elif (name := _find_name(rest.split(" ", 1)[0], here)) is not None:
            target, said = name, rest.split(" ", 1)[1] if " " in rest else ""
        said = said.strip(" \"'")
        if not said:
            return Action("TALK", target=target, parsed=False, failure_reason="TALK with nothing said")
        return Action("TALK", target=target, text=said)
    if kind in ("HELP", "INVITE"):
        who, _, where = rest.partition(" to ")
        target = _find_name(who, here)
        if target is None:
            return Action(kind, text=rest, parsed=False,
                          failure_reason=f"{kind} without someone present")
        place = _find_location(where, town) if kind == "INVITE" else None
        if kind == "INVITE" and place is None:
            return Action(kind, target=target, parsed=False,
                          failure_reason="INVITE without a known place")
        return Action(kind, target=target, text=place or "")
    if kind == "ACCEPT":
        return Action(kind)
    return Action(kind, text=rest)


def _find_location(text: str, town: Town) -> str | None:
    norm = text.lower().replace(" ", "_")
    best = None
    for name in town.locations:
        i = norm.find(name)
        # Earliest match; at the same position the longest name (home_10, not home_1).
        if i >= 0 and (best is None or (i, -len(name)) < (best[0], -len(best[1]))):
            best = (i, name)
    return best[1] if best else None


def _find_name(text: str, names: list[str]) -> str | None:
    t = text.strip(" \"'.,").lower()
    for n in names:
        if n.lower() == t or n.split(" ")[0].lower() == t:
            return n
    return None


def apply_action(action: Action, location: str, alone: bool, town: Town,
                 occupancy: dict[str, int]) -> tuple[bool, str, str]:
    """Apply a parsed action; returns (success, failure_reason, location_after)."""
    if not action.parsed:
        return False, action.failure_reason, location
    if action.action_type == "MOVE":
        if action.target == location:
            return False, "already there", location
        if action.target not in town.neighbours(location):
            return False, f"{action.target} is not next to {location}", location
        if occupancy.get(action.target, 0) >= town.locations[action.target].capacity:
            return False, f"{action.target} is full", location
        occupancy[location] -= 1
        occupancy[action.target] = occupancy.get(action.target, 0) + 1
        return True, "", action.target
    if action.action_type == "TALK" and alone:
        return False, "nobody here to talk to", location
    return True, "", location
