"""Contrast data for the Big Five trait vectors (written for this project).

`data/contrast_pairs.json` holds, per trait (E, A, C, O, N):
- `pairs`: persona pairs (high pole vs low pole) that share one user message. Each has
  `split` "train" (32 per trait: the only items vectors are computed from) or
  "heldout" (8 per trait: for verification).
- `situations`: held-out "situation + high-trait reply + low-trait reply" items.
- `likert`: held-out questionnaire statements with a `reverse_keyed` flag.

The data hash (of the train pairs and the prompt template) keys the vector cache, so
editing held-out items never invalidates vectors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from steertown.config import TRAITS


@dataclass(frozen=True)
class ContrastPair:
    id: str
    trait: str
    split: str  # train | heldout
    high: str  # persona text, high pole
    low: str  # persona text, low pole
    user: str  # shared user message


@dataclass(frozen=True)
class SituationItem:
    id: str
    trait: str
    situation: str
    high: str  # reply typical of the high pole
    low: str  # reply typical of the low pole


@dataclass(frozen=True)
class LikertItem:
    id: str
    trait: str
    statement: str
    reverse_keyed: bool  # True: agreeing indicates the LOW pole


@dataclass(frozen=True)
class ContrastData:
    system_template: str  # "... {persona}"
    pairs: tuple[ContrastPair, ...]
    situations: tuple[SituationItem, ...]
    likert: tuple[LikertItem, ...]
    trait_names: dict[str, str]

    def train_pairs(self, trait: str | None = None) -> list[ContrastPair]:
        """Pairs vectors may be computed from."""
        return [p for p in self.pairs if p.split == "train" and trait in (None, p.trait)]

    def heldout_pairs(self, trait: str | None = None) -> list[ContrastPair]:
        """Pairs reserved for verification (never used for vectors)."""
        return [p for p in self.pairs if p.split == "heldout" and trait in (None, p.trait)]

    def system_prompt(self, persona: str) -> str:
        return self.system_template.format(persona=persona)

    def train_hash(self) -> str:
        """Hash of exactly what the vectors depend on (template + train pairs)."""
        payload = [self.system_template] + [
            [p.id, p.trait, p.high, p.low, p.user] for p in self.train_pairs()]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def default_path() -> Path:
    """The packaged contrast_pairs.json."""
    return Path(str(resources.files("steertown.steering") / "data" / "contrast_pairs.json"))


def _parse(raw: dict, source: str) -> ContrastData:
    pairs, situations, likert, names = [], [], [], {}
    for t in TRAITS:
        if t not in raw.get("traits", {}):
            raise ValueError(f"{source}: trait {t} missing")
        td = raw["traits"][t]
        names[t] = td.get("name", t)
        for p in td["pairs"]:
            if p["split"] not in ("train", "heldout"):
                raise ValueError(f"{source}: pair {p['id']} has split {p['split']!r}")
            pairs.append(ContrastPair(p["id"], t, p["split"], p["high"], p["low"], p["user"]))
        situations += [SituationItem(s["id"], t, s["situation"], s["high"], s["low"])
                       for s in td.get("situations", [])]
        likert += [LikertItem(q["id"], t, q["statement"], bool(q["reverse_keyed"]))
                   for q in td.get("likert", [])]
    return ContrastData(raw["system_template"], tuple(pairs), tuple(situations),
                        tuple(likert), names)


@lru_cache(maxsize=4)
def load_contrast_data(path: str | None = None) -> ContrastData:
    """Load and check contrast data (default: the packaged file)."""
    p = Path(path) if path else default_path()
    with open(p, encoding="utf-8") as f:
        return _parse(json.load(f), p.name)
