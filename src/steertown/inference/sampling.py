"""Row-independent next-token selection: repetition penalty, greedy, seeded nucleus sampling.

Every operation is elementwise or per row, so a row's choice is a function of its own
logits and its own `torch.Generator` only: batching never changes what a row samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TOPK_FAST = 64  # nucleus is searched in the top 64 first; full sort only if their mass < top_p


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF-style penalty, elementwise (so row-independent): seen ids get l/p if l > 0 else l*p.

    `logits` [B, V]; `seen` [B, V] bool mask of each row's own prompt + generated ids.
    """
    if penalty == 1.0:
        return logits
    return torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """Inverse-CDF draw from unnormalised probs with the row's own generator."""
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.rand(1, generator=generator, dtype=cdf.dtype) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), probs.numel() - 1)


def choose_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                  generators: Sequence[torch.Generator | None]) -> list[int]:
    """Next token per row: greedy when temperature == 0, else seeded nucleus sampling.

    Only row-wise operations are used, so a row's choice never depends on other rows.
    """
    if temperature <= 0:
        return torch.argmax(logits, dim=-1).tolist()
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return [_draw(probs[b], g) for b, g in enumerate(generators)]
    k = min(TOPK_FAST, probs.shape[-1])
    top_p_vals, top_idx = torch.topk(probs, k, dim=-1)
    out = []
    for b, g in enumerate(generators):
        vals, idx = top_p_vals[b], top_idx[b]
        if float(vals.sum()) < top_p:  # rare: flat distribution, nucleus beyond the top k
            vals, idx = torch.sort(probs[b], descending=True)
        # Drop tokens once the mass before them already reaches top_p (keeps >= 1 token).
        vals = vals.masked_fill((torch.cumsum(vals, dim=-1) - vals) >= top_p, 0.0)
        out.append(int(idx[_draw(vals, g)]))
    return out
