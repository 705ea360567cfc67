"""Memory streams: observations with importance, retrieval by recency, importance, relevance.

Each agent's memories live in preallocated numpy arrays (embedding matrix, importance,
tick), so retrieval is one matrix-vector product, not a Python loop over memories, and
the stream is bounded: when full, the memory with the lowest retention score is
replaced. Embeddings are computed once, when a memory is added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Retrieved:
    text: str
    score: float
    memory_id: int = -1


class MemoryStream:
    """One agent's bounded memory stream."""

    def __init__(self, capacity: int, dim: int, decay: float):
        self.capacity = capacity
        self.decay = decay
        self.texts: list[str] = []
        self.dim = dim
        self.next_id = 0  # ids are per agent, in order of creation (never reused)
        self._allocate(min(capacity, 16))

    def _allocate(self, size: int) -> None:
        # Grow by doubling up to `capacity`: a big town does not pay for empty streams.
        emb = np.zeros((size, self.dim), dtype=np.float32)
        importance = np.zeros(size, dtype=np.float32)
        tick = np.zeros(size, dtype=np.int64)
        ids = np.zeros(size, dtype=np.int64)
        n = len(self.texts)
        if n:
            emb[:n], importance[:n], tick[:n] = self.emb[:n], self.importance[:n], self.tick[:n]
            ids[:n] = self.ids[:n]
        self.emb, self.importance, self.tick, self.ids = emb, importance, tick, ids

    def __len__(self) -> int:
        return len(self.texts)

    def latest_tick(self) -> int:
        """Tick of the newest memory (0 when empty)."""
        return int(self.tick[: len(self.texts)].max()) if self.texts else 0

    def add(self, text: str, importance: float, tick: int, embedding: np.ndarray) -> int:
        """Store a memory (when full, replacing the one least worth keeping); returns its id."""
        n = len(self.texts)
        if n < self.capacity:
            if n == len(self.tick):
                self._allocate(min(self.capacity, 2 * n))
            slot = n
            self.texts.append(text)
        else:
            keep = self.importance / 10.0 + self.decay ** (tick - self.tick)
            slot = int(np.argmin(keep))
            self.texts[slot] = text
        self.emb[slot] = embedding
        self.importance[slot] = importance
        self.tick[slot] = tick
        self.ids[slot] = self.next_id
        self.next_id += 1
        return self.next_id - 1

    def scores(self, query: np.ndarray, now: int) -> np.ndarray:
        """Recency + importance + relevance, each in [0, 1], summed (Generative Agents)."""
        n = len(self.texts)
        recency = self.decay ** (now - self.tick[:n]).astype(np.float32)
        importance = self.importance[:n] / 10.0
        relevance = (self.emb[:n] @ query + 1.0) / 2.0  # unit vectors: cosine in [-1, 1]
        return recency + importance + relevance

    def retrieve(self, query: np.ndarray, now: int, k: int) -> list[Retrieved]:
        """Top-k memories for `query` (a unit embedding), best first; ties by slot order."""
        n = len(self.texts)
        if n == 0:
            return []
        s = self.scores(query, now)
        k = min(k, n)
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.lexsort((top, -s[top]))]
        return [Retrieved(self.texts[i], float(s[i]), int(self.ids[i])) for i in top]

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON part and array part (for a safetensors checkpoint)."""
        n = len(self.texts)
        return ({"texts": list(self.texts), "next_id": self.next_id},
                {"emb": self.emb[:n].copy(), "importance": self.importance[:n].copy(),
                 "tick": self.tick[:n].copy(), "ids": self.ids[:n].copy()})

    def load_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        n = len(meta["texts"])
        self.texts = []
        self._allocate(max(min(self.capacity, 16), n))
        self.texts = list(meta["texts"])
        self.emb[:n] = arrays["emb"]
        self.importance[:n] = arrays["importance"]
        self.tick[:n] = arrays["tick"]
        self.ids[:n] = arrays["ids"]
        self.next_id = meta["next_id"]
