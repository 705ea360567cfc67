"""The one seed derivation of the project: every random stream (encounters, sampling,
placebo directions, forks) is seeded from the run's seed and a few labels."""

from __future__ import annotations

import hashlib
from typing import Any


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (independent of Python's hash salt)."""
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1
