"""Society metrics per tick: the tie network, the economy, goals and news reach.

The network is the graph of pairs that have interacted at all (tie weight > 0); the
friendship count uses the higher threshold of `world.social`. Pure functions, so each
metric is unit-tested on graphs with known values.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def adjacency(edges: list[tuple[str, str, float]]) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = defaultdict(set)
    for a, b, w in edges:
        if w > 0:
            adj[a].add(b)
            adj[b].add(a)
    return adj


def density(num_edges: int, n: int) -> float:
    """Share of all possible pairs that are connected."""
    return 2.0 * num_edges / (n * (n - 1)) if n > 1 else 0.0


def clustering(adj: dict[str, set[str]]) -> float:
    """Global clustering (transitivity): closed triples / connected triples."""
    closed = triples = 0
    for nbrs in adj.values():
        d = len(nbrs)
        triples += d * (d - 1) // 2
        ordered = sorted(nbrs)
        for i, u in enumerate(ordered):
            closed += len(adj[u].intersection(ordered[i + 1:]))
    return closed / triples if triples else 0.0


def degree_centralisation(adj: dict[str, set[str]], n: int) -> float:
    """Freeman degree centralisation in [0, 1] (1 = a star), over all n agents."""
    if n < 3:
        return 0.0
    degrees = [len(v) for v in adj.values()] + [0] * (n - len(adj))
    top = max(degrees)
    return sum(top - d for d in degrees) / ((n - 1) * (n - 2))


def gini(values: list[float]) -> float:
    """Gini coefficient of non-negative values (0 = equal, -> 1 = one holds all)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * x).sum() / (n * x.sum()))


def society_row(edges: list[tuple[str, str, float]], friend_edges: int, coins: list[int],
                energy: list[int], goals_met: int, news_known: int) -> dict:
    """The society table's metrics for one tick (without run_id and tick)."""
    n = len(coins)
    adj = adjacency(edges)
    num_edges = sum(1 for *_, w in edges if w > 0)
    return {"agents": n, "tie_edges": num_edges, "friend_edges": friend_edges,
            "density": density(num_edges, n), "clustering": clustering(adj),
            "degree_centralisation": degree_centralisation(adj, n),
            "gini_coins": gini(coins), "mean_coins": float(np.mean(coins)) if n else 0.0,
            "mean_energy": float(np.mean(energy)) if n else 0.0, "goals_met": goals_met,
            "news_reach": news_known / n if n else 0.0}
