"""Batched trait readouts under steering: reply-likelihood margin and Likert score.

A *direction* is what gets added to the residual stream at alpha = 1, per steered
layer: for a trait it is the backend's own calibrated vector (`steering_matrix`), for
a control it is a seeded random direction of the same norm. A *steer* is
`(direction name, coefficient)`. Every readout row carries its own steer, so a whole
sweep (items x coefficients x directions) runs in a few batched forward passes.

Trait rows are steered through the backend's own hooks (`backend.steered`), so the
sweep measures exactly what a run does; random-direction rows go through a temporary
hook of this module that adds the same kind of per-row vector.

Readouts (both on held-out items only, never on the vectors' train pairs):
- margin: mean log-prob per token of the high-trait reply minus the low-trait reply to
  the same situation (nats/token). Length-normalised so reply length does not matter.
- likert: expected value over the renormalised probabilities of the answer digits 1-5
  at the next-token position; reverse-keyed items are flipped (6 - score).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from steertown.residual import added, left_pad, pad_id, right_pad
from steertown.steering.contrast_data import LikertItem, SituationItem

NEUTRAL_SYSTEM = "You are a resident of a small town."
LIKERT_PROMPT = ("How well does this statement describe you? Answer with one digit from 1 "
                 "(strongly disagree) to 5 (strongly agree).\nStatement: \"{statement}\"")

# (direction name, coefficient); ("", 0.0) = unsteered. A row steered along several
# directions at once (an agent's own profile) is a tuple of such pairs.
Steer = tuple[str, float] | tuple[tuple[str, float], ...]
UNSTEERED: Steer = ("", 0.0)


def norm_steer(steer: Steer) -> Steer:
    """Coefficient 0 is the same row whatever the direction: share it."""
    if steer and isinstance(steer[0], tuple):
        pairs = tuple(sorted((n, float(c)) for n, c in steer if c != 0))
        return pairs if len(pairs) > 1 else (pairs[0] if pairs else UNSTEERED)
    return UNSTEERED if steer[1] == 0 else (steer[0], float(steer[1]))


def _pairs(steer: Steer) -> tuple[tuple[str, float], ...]:
    return tuple(steer) if steer and isinstance(steer[0], tuple) else (steer,)  # type: ignore[return-value]


def random_directions(backend: Any, n: int, seed: int = 0) -> dict[str, dict[int, torch.Tensor]]:
    """`n` seeded Gaussian directions per steered layer, each of the trait vectors' norm.

    Same norm as the backend's steering vector at that layer (unit / len(layers)), so a
    random coefficient c injects exactly as much as a trait coefficient c.
    """
    g = torch.Generator().manual_seed(int(seed))
    layers = list(backend.layers)
    out = {}
    for r in range(n):
        per_layer = {}
        for layer in layers:
            norm = float(backend.vectors.steering_matrix(layer)[0].norm())
            v = torch.randn(backend.model.config.hidden_size, generator=g)
            per_layer[layer] = v / v.norm() * norm
        out[f"R{r}"] = per_layer
    return out


class Scorer:
    """Scores token sequences under per-row steers with one model; caches nothing itself."""

    def __init__(self, backend: Any, extra_directions: dict[str, dict[int, torch.Tensor]] | None
                 = None, batch_size: int = 48) -> None:
        self.b = backend
        self.traits = list(backend.traits)
        self.extra = extra_directions or {}
        self.batch_size = batch_size
        self.forward_tokens = 0  # padded tokens pushed through the model (cost accounting)
        # Called once per forward batch with the number of prompts in it (progress bars).
        self.on_rows: Callable[[int], None] = lambda n: None

    def _steering(self, steers: Sequence[Steer]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        alphas = torch.zeros(len(steers), len(self.traits))
        extra: dict[int, torch.Tensor] = {}
        hidden = self.b.model.config.hidden_size
        for r, steer in enumerate(steers):
            for name, coef in _pairs(steer):
                if coef == 0 or not name:
                    continue
                if name in self.traits:
                    alphas[r, self.traits.index(name)] += coef
                elif name in self.extra:
                    for layer, v in self.extra[name].items():
                        extra.setdefault(layer, torch.zeros(len(steers), hidden))[r] += coef * v
                else:
                    raise KeyError(f"unknown steering direction {name!r}")
        return alphas, extra

    def _batches(self, lengths: list[int]) -> Iterator[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        for s in range(0, len(order), self.batch_size):
            yield order[s:s + self.batch_size]

    def _tail_batches(self, lengths: list[int], tails: list[int]) -> Iterator[list[int]]:
        """Batches of prompts holding at most `batch_size` tails in all: each tail gets its
        own copy of its prompt's KV cache, so the tails, not the prompts, bound memory (48
        decision prompts x ~10 options each took 12 GB)."""
        for group in self._batches(lengths):
            batch: list[int] = []
            for i in group:
                if batch and sum(tails[j] for j in batch) + tails[i] > self.batch_size:
                    yield batch
                    batch = []
                batch.append(i)
            yield batch

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return left_pad(seqs, pad_id(self.b.tokenizer), self.b.device)

    @torch.no_grad()
    def logprobs(self, seqs: list[list[int]], steers: list[Steer],
                 positions: list[list[int]]) -> list[torch.Tensor]:
        """Per row, log-softmax over the vocabulary at the given (unpadded) positions.

        Only the asked positions go through the LM head (it is ~20% of the model's
        compute per token on SmolLM2). Rows are sorted by length and batched.
        """
        out: list[torch.Tensor | None] = [None] * len(seqs)
        model, head = self.b.model, self.b.model.get_output_embeddings()
        for idx in self._batches([len(q) for q in seqs]):
            self.on_rows(len(idx))
            ids, mask, pos = self._left_pad([seqs[i] for i in idx])
            alphas, extra = self._steering([steers[i] for i in idx])
            with self.b.steered(alphas), added(model, extra):
                h = model.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                use_cache=False).last_hidden_state
            self.forward_tokens += ids.numel()
            width = ids.shape[1]
            for r, i in enumerate(idx):
                p = torch.tensor(positions[i], device=ids.device) + (width - len(seqs[i]))
                out[i] = torch.log_softmax(head(h[r, p]).float(), dim=-1).cpu()
        return out  # type: ignore[return-value]

    def tail_logits(self, prompts: list[list[int]], steers: list[Steer],
                    tails: list[list[list[int]]],
                    consume: Callable[[int, int, torch.Tensor], None]) -> None:
        """Raw next-token logits over each of a prompt's tails: `consume(i, j, [len, V])`.

        Row s of the logits predicts tail token s (the prompt's last position predicts
        the first). Prompts may have different numbers of tails. Each steered prompt is
        run once and its KV cache shared by its tails (the prompt is most of the tokens);
        tails are right-padded after the left-padded prompts, and padding at the end
        cannot affect earlier tokens.
        """
        model, head = self.b.model, self.b.model.get_output_embeddings()
        dev = self.b.device
        lengths = [len(p) + max(map(len, tails[i])) for i, p in enumerate(prompts)]
        with torch.no_grad():
            for idx in self._tail_batches(lengths, [len(t) for t in tails]):
                self.on_rows(len(idx))
                ids, mask, pos = self._left_pad([prompts[i] for i in idx])
                alphas, extra = self._steering([steers[i] for i in idx])
                counts = torch.tensor([len(tails[i]) for i in idx])
                rows = torch.repeat_interleave(torch.arange(len(idx)), counts)
                owner = [(i, j) for i in idx for j in range(len(tails[i]))]
                flat = [tails[i][j] for i, j in owner]
                t_ids, t_mask = right_pad(flat, pad_id(self.b.tokenizer), dev)
                tw = t_ids.shape[1]
                dev_rows = rows.to(dev)
                t_pos = pos[dev_rows, -1:] + 1 + torch.arange(tw, device=dev)
                rep_extra = {layer: d[rows] for layer, d in extra.items()}
                with self.b.steered(alphas), added(model, extra):
                    o = model.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                    use_cache=True)
                cache = o.cache if hasattr(o, "cache") else o.past_key_values
                cache.batch_select_indices(dev_rows)  # row r's KV once per tail
                with self.b.steered(alphas[rows]), added(model, rep_extra):
                    h = model.model(input_ids=t_ids, position_ids=t_pos, cache=cache,
                                    use_cache=True,
                                    attention_mask=torch.cat([mask[dev_rows], t_mask], 1)
                                    ).last_hidden_state
                self.forward_tokens += ids.numel() + t_ids.numel()
                last = o.last_hidden_state[dev_rows, -1]
                for f, ((i, j), t) in enumerate(zip(owner, flat, strict=True)):
                    hs = torch.cat([last[f:f + 1], h[f, :len(t) - 1]], 0)
                    consume(i, j, head(hs).float())

    def continuation_logprobs(self, prompts: list[list[int]], steers: list[Steer],
                              tails: list[list[list[int]]]) -> list[list[float]]:
        """Mean log-prob per token of each of a prompt's tails (see `tail_logits`)."""
        out: list[list[float]] = [[0.0] * len(t) for t in tails]

        def mean_logprob(i: int, j: int, logits: torch.Tensor) -> None:
            tgt = torch.tensor(tails[i][j], device=logits.device)[:, None]
            out[i][j] = float(torch.log_softmax(logits, dim=-1).gather(-1, tgt).mean())

        self.tail_logits(prompts, steers, tails, mean_logprob)
        return out


def _reply_ids(backend: Any, text: str) -> list[int]:
    return list(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def margin_scores(scorer: Scorer, jobs: Sequence[tuple[SituationItem, Steer]],
                  system: str = NEUTRAL_SYSTEM) -> dict[tuple[str, Steer], float]:
    """{(item id, steer): mean log-prob/token of high reply - low reply} (nats/token)."""
    b = scorer.b
    uniq = {(it.id, norm_steer(s)): it for it, s in jobs}
    keys = sorted(uniq)
    prompts = [b.prompt_ids(system, uniq[k].situation) for k in keys]
    tails = [[_reply_ids(b, uniq[k].high), _reply_ids(b, uniq[k].low)] for k in keys]
    lp = scorer.continuation_logprobs(prompts, [k[1] for k in keys], tails)
    return {k: hi - lo for k, (hi, lo) in zip(keys, lp, strict=True)}


def digit_ids(backend: Any) -> list[int]:
    """Token ids of the answers "1".."5" (single tokens in SmolLM2's vocabulary)."""
    ids = []
    for d in "12345":
        toks = _reply_ids(backend, d)
        if len(toks) != 1:
            raise ValueError(f"digit {d!r} is not a single token for this tokenizer")
        ids.append(toks[0])
    return ids


def likert_scores(scorer: Scorer, jobs: Sequence[tuple[LikertItem, Steer]],
                  system: str = NEUTRAL_SYSTEM) -> dict[tuple[str, Steer], float]:
    """{(item id, steer): expected answer in [1, 5], trait-keyed (reverse items flipped)}."""
    b = scorer.b
    uniq = {(it.id, norm_steer(s)): it for it, s in jobs}
    keys = sorted(uniq)
    seqs = [b.prompt_ids(system, LIKERT_PROMPT.format(statement=uniq[k].statement)) for k in keys]
    lps = scorer.logprobs(seqs, [k[1] for k in keys], [[len(q) - 1] for q in seqs])
    digits = torch.tensor(digit_ids(b))
    out = {}
    for k, lp in zip(keys, lps, strict=True):
        p = torch.softmax(lp[0, digits], dim=-1)  # renormalised over the five answers
        score = float((p * torch.arange(1, 6, dtype=p.dtype)).sum())
        out[k] = 6.0 - score if uniq[k].reverse_keyed else score
    return out
