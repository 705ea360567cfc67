"""Quality labels of what agents say: is a Talk/Work line something a townsperson could say?

Every action message gets one label at generation time (messages.quality):

- `ok`            usable free text
- `garbage`       emoji or symbol runs, markup, few letters, loops (a phrase or an action
                  prefix repeated inside the line)
- `template_leak` the prompt shows through: placeholders (`<place>`, `[name]`), prompt
                  phrases ("Reply with", "tick 7"), a label before the line ("My plan:
                  ..."), a copy of the prompt's worked example, assistant-speak ("What
                  can I do for you", "your question"), or a Work line addressed to "you"
- `too_short`     fewer than MIN_WORDS words after the action prefix
- `repeat`        (nearly) the same as one of the agent's own earlier lines, or a parrot of
                  a line just heard at the place
- `unrelated`     sentence-embedding cosine to the situation (place, its work, the agent's
                  goal, the line being answered) below the embedder's threshold
- `none`          not free text (Move, Rest, reflections)

The first rule that matches wins, in the order above. Only `ok` counts as usable. The
per-agent history the `repeat` rule needs is part of the simulation state (checkpointed),
so a resumed run labels exactly as an uninterrupted one.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from steertown.agents.prompts import EXAMPLE_TALK, EXAMPLE_WORK

LABELS: tuple[str, ...] = ("ok", "garbage", "template_leak", "too_short", "repeat", "unrelated")
NOT_FREE_TEXT = "none"
USABLE = "ok"
FREE_TEXT_ACTIONS = ("TALK", "WORK")
MIN_WORDS = 3
HISTORY = 8  # earlier lines per agent the repeat rule compares against
REPEAT_JACCARD = 0.8  # word-set overlap at which a line counts as the same line again
# Cosine below which a line is unrelated to its situation, per embedder. Set from a
# hand-read sample of the default model's lines (docs/text_quality.md); an embedder
# not listed here skips the rule rather than applying a meaningless threshold.
RELATED_MIN: dict[str, float] = {"minilm": 0.15, "hashing": -1.0}

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+")
_PLACEHOLDER = re.compile(r"<[^<>]{1,40}>|\[[A-Za-z][A-Za-z _]{0,30}\]|\{[A-Za-z_ ]{1,30}\}")
_ACTION_PREFIX = re.compile(r"(?:^|[\s.!?\"'])(?:Work|Rest|Move [a-z_]+|Talk [A-Z][a-z]*(?: \d+)?):")
_SECOND_PERSON = re.compile(r"\b(?:you|your|yours|yourself|you're|you've|you'll|you'd)\b", re.I)
_MARKUP = re.compile(r"```|\*\*|https?://|www\.|#\w|\|.*\|")
_LEAK_PHRASES = (
    # the prompt's own wording
    "reply with", "one line", "one of:", "what do you do now", "here with you:",
    "places next to you", "you remember:", "your plan:", "your goal", "what you say",
    "what you do", "time: tick",
    # assistant-speak
    "what can i do for you", "how can i help", "how can i assist", "how may i",
    "happy to answer", "happy to help", "your question", "as an ai", "language model",
    "i'm an ai", "i am an ai", "ai assistant", "let me know if", "feel free to",
    "i hope this helps", "here is a", "here are some", "sure, here", "certainly!",
)
EXAMPLES = (EXAMPLE_TALK, EXAMPLE_WORK)  # the persona's worked example lines
_TICK = re.compile(r"\btick\s*\d+", re.I)
# A label before the line ("David: ...", "My plan: ...", "4: ..."): the model is writing a
# form or a script, not speaking.
_LABEL_START = re.compile(r"^[\w#' ]{1,20}:\s")


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


def words(text: str) -> list[str]:
    """Lower-case words of a line (letters, apostrophes, hyphens; or digit runs)."""
    return [w.lower() for w in _WORD.findall(text)]


def _is_symbol(ch: str) -> bool:
    """Emoji and pictographs (symbol categories, or the supplementary planes)."""
    return unicodedata.category(ch) in ("So", "Sk", "Cs", "Co") or ord(ch) >= 0x1F000


def is_garbage(text: str) -> bool:
    """Emoji, markup, mostly non-letters, or a loop (a 3-word phrase or action prefix again)."""
    if any(_is_symbol(ch) for ch in text) or _MARKUP.search(text):
        return True
    visible = [ch for ch in text if not ch.isspace()]
    if visible and sum(ch.isalpha() for ch in visible) / len(visible) < 0.6:
        return True
    if _ACTION_PREFIX.search(text):
        return True  # the model started a second action inside the line: a loop
    w = words(text)
    grams = [tuple(w[i:i + 3]) for i in range(len(w) - 2)]
    if len(grams) != len(set(grams)):
        return True
    return any(a == b == c for a, b, c in zip(w, w[1:], w[2:], strict=False))


def is_template_leak(text: str, action_type: str) -> bool:
    """Placeholders, prompt wording, assistant-speak, or a Work line addressed to "you"."""
    low = text.lower()
    if _PLACEHOLDER.search(text) or _TICK.search(text) or _LABEL_START.match(text):
        return True
    if any(p in low for p in _LEAK_PHRASES) or is_repeat(text, list(EXAMPLES)):
        return True
    # A Work line says what the agent does; talking to "you" there is the assistant
    # persona answering the prompt, not a townsperson at work.
    return action_type == "WORK" and bool(_SECOND_PERSON.search(text))


def _norm_set(text: str) -> frozenset[str]:
    return frozenset(words(text))


def is_repeat(text: str, earlier: list[str]) -> bool:
    """Same words (Jaccard >= REPEAT_JACCARD) as one of `earlier`."""
    mine = _norm_set(text)
    if not mine:
        return False
    for line in earlier:
        other = _norm_set(line)
        if other and len(mine & other) / len(mine | other) >= REPEAT_JACCARD:
            return True
    return False


def surface_label(text: str, action_type: str, earlier: list[str]) -> str | None:
    """The label the text alone decides (all but `unrelated`); None = passes these rules."""
    if is_garbage(text):
        return "garbage"
    if is_template_leak(text, action_type):
        return "template_leak"
    if len(words(text)) < MIN_WORDS:
        return "too_short"
    if is_repeat(text, earlier):
        return "repeat"
    return None


def situation_text(place: str, description: str, work: str, goal: str, heard: str) -> str:
    """What a line should relate to: the place, its work, the goal, the line answered."""
    parts = [f"At the {place.replace('_', ' ')}: {description}.", f"Work here: {work}.",
             f"Goal: {goal}."]
    if heard:
        parts.append(heard)
    return " ".join(parts)


@dataclass
class Pending:
    """A message waiting for its label (labels are computed once per tick, in one batch)."""

    row: dict
    agent_id: str
    action_type: str
    text: str
    situation: str
    heard: list[str]


class QualityLabeler:
    """Labels a tick's messages in order; keeps each agent's recent free-text lines."""

    def __init__(self, embedder: Embedder, history: int = HISTORY) -> None:
        self.embedder = embedder
        self.threshold = RELATED_MIN.get(getattr(embedder, "name", ""))
        self.history_len = history
        self.history: dict[str, deque[str]] = {}
        self._pending: list[Pending] = []

    def submit(self, row: dict, agent_id: str, action_type: str, text: str, situation: str,
               heard: list[str]) -> None:
        """Queue a message row; `flush` sets row['quality'] (Move/Rest: at once, `none`)."""
        if action_type not in FREE_TEXT_ACTIONS:
            row["quality"] = NOT_FREE_TEXT
            return
        self._pending.append(Pending(row, agent_id, action_type, text, situation, heard))

    def flush(self) -> None:
        """Label the queued rows in submission order (histories advance in that order)."""
        pending, self._pending = self._pending, []
        needs_embedding: list[Pending] = []
        for p in pending:
            earlier = list(self.history.get(p.agent_id, ())) + p.heard
            label = surface_label(p.text, p.action_type, earlier)
            self.history.setdefault(p.agent_id, deque(maxlen=self.history_len)).append(p.text)
            if label is None and self.threshold is not None:
                needs_embedding.append(p)
            p.row["quality"] = label or USABLE
        if not needs_embedding:
            return
        emb = self.embedder.embed([p.text for p in needs_embedding]
                                  + [p.situation for p in needs_embedding])
        n = len(needs_embedding)
        cos = np.sum(emb[:n] * emb[n:], axis=1)  # unit vectors
        for p, c in zip(needs_embedding, cos, strict=True):
            if float(c) < self.threshold:
                p.row["quality"] = "unrelated"

    def to_state(self) -> dict[str, list[str]]:
        """Per-agent recent lines (JSON), for checkpoints."""
        return {k: list(v) for k, v in sorted(self.history.items())}

    def load_state(self, state: dict[str, list[str]]) -> None:
        self.history = {k: deque(v, maxlen=self.history_len) for k, v in state.items()}
        self._pending = []


def usable_share(labels: list[str]) -> float | None:
    """Share of free-text labels that are `ok` (None when there is no free text)."""
    free = [x for x in labels if x != NOT_FREE_TEXT]
    return sum(x == USABLE for x in free) / len(free) if free else None
