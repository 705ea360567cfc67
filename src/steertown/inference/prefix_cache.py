"""Per-agent steered prefix KV cache: the persona (system) part is prefilled once, reused.

An agent's system prompt and steering are fixed across ticks, so the keys/values of
its chat-template system block are too. With `optimization.prefix_cache` the backend
ALWAYS prefills in two phases (prefix, then the rest of the prompt on top of the
prefix KV), whether the prefix was cached or not. A cache hit therefore returns exactly
the tensors a miss would compute, so outputs never depend on cache state (a resumed
run equals an uninterrupted one). Two-phase output is equivalent to, but not
bit-identical with, a single-phase prefill, which is why it is a config switch.

Entries are keyed by (prefix token ids, per-trait alphas) and evicted least recently
used beyond `max_bytes`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer: keys, values [kvH, n, D]


class PrefixKVCache:
    """LRU map (prefix ids, alphas) -> per-layer unpadded keys/values of that prefix."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, KV] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(prefix: list[int], alphas: torch.Tensor) -> tuple:
        return (tuple(prefix), tuple(float(a) for a in alphas.tolist()))

    def get(self, key: tuple) -> KV | None:
        kv = self._entries.get(key)
        if kv is not None:
            self._entries.move_to_end(key)
        return kv

    def lookup(self, keys: list[tuple]) -> tuple[list[KV | None], list[str], list[int]]:
        """Cached KV per row (None on a miss), "hit"/"miss" per row, and one row index per
        distinct missing key (the rows whose prefix must be computed), and count them."""
        kvs = [self.get(k) for k in keys]
        state = ["hit" if kv is not None else "miss" for kv in kvs]
        todo: dict[tuple, int] = {}
        for i, kv in enumerate(kvs):
            if kv is None:
                todo.setdefault(keys[i], i)
        self.hits += state.count("hit")
        self.misses += state.count("miss")
        return kvs, state, list(todo.values())

    def put(self, key: tuple, kv: KV) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if key in self._entries or size > self.max_bytes:
            return
        self._entries[key] = kv
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                               for k, v in old)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self._bytes, "hits": self.hits,
                "misses": self.misses}


def split_cache_rows(cache, lengths: list[int]) -> list[KV]:
    """Per row, the unpadded (left-padded input) keys/values of every layer, cloned."""
    rows: list[KV] = [[] for _ in lengths]
    for layer in cache.layers:
        width = layer.keys.shape[2]
        for r, n in enumerate(lengths):
            rows[r].append((layer.keys[r, :, width - n:].clone(),
                            layer.values[r, :, width - n:].clone()))
    return rows


def assemble(model_config, rows: list[KV], width: int):
    """A DynamicCache [B, kvH, width, D] with each row's prefix right-aligned (zeros left)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model_config)
    for li in range(len(rows[0])):
        k0, _ = rows[0][li]
        shape = (len(rows), k0.shape[0], width, k0.shape[2])
        keys = k0.new_zeros(shape)
        values = k0.new_zeros(shape)
        for r, kv in enumerate(rows):
            k, v = kv[li]
            keys[r, :, width - k.shape[1]:] = k
            values[r, :, width - v.shape[1]:] = v
        cache.update(keys, values, li)
    return cache
