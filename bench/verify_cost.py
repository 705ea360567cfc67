"""Cost of `verify`'s decision re-scoring, previous scorer vs current, side by side
(`bench/run.py --verify-cost RUN_DIR`).

The decisions `verify` samples from a finished run (default budget: 64, two per agent of a
32-agent town) are re-scored as `decision_checks` does it (own and none first, then the
other conditions) in one process on one loaded model, the arms alternating (best of
`reps`), so load affects them alike:

- previous: the scorer before issue 19's cost work (commit a1e8601): blocks below the
  first steered layer once per call, conditions batched, options as a token tree; the
  library's decoder blocks; nothing kept between calls;
- current, nothing kept: `BranchScorer(share=False)`: written-out blocks, the last block
  only on the rows whose logits are read, the LM head once per row;
- current: plus each agent's system block kept per condition for its next decision and
  each prompt's lower-block state kept for the second phase.

The arms' log-probabilities are compared (max |difference| over every decision, condition
and option): they compute the same function, so only float rounding may differ.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steertown.residual import decoder_layers


class PreviousScorer:
    """The decision scorer as of commit a1e8601 (kept here as the benchmark's baseline)."""

    def __init__(self, backend: Any, max_batch: int = 32) -> None:
        self.b = backend
        self.model = backend.model
        self.inner = backend.model.model
        self.blocks = decoder_layers(backend.model)
        self.head = backend.model.get_output_embeddings()
        self.layers = sorted(backend.layers)  # "layer k" = output of block k - 1
        self.max_batch = max_batch
        self.block_passes = 0.0  # prompt-equivalent full passes (cost accounting)

    def _tree(self, prompt: list[int], paths: list[list[int]]):
        """Token ids, positions, boolean [S, S] mask, and for each (option, step) the row
        whose logits predict that step's token."""
        n = len(prompt)
        ids, pos = list(prompt), list(range(n))
        pred: list[list[int]] = []
        blocks: list[tuple[int, int]] = []
        for path in paths:
            start = len(ids)
            body = path[:-1]
            ids += body
            pos += [n + s for s in range(len(body))]
            blocks.append((start, len(ids)))
            pred.append([n - 1] + list(range(start, start + len(body))))
        size = len(ids)
        mask = torch.zeros(size, size, dtype=torch.bool)
        mask[:n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
        for start, end in blocks:
            mask[start:end, :n] = True
            mask[start:end, start:end] = torch.ones(end - start, end - start,
                                                    dtype=torch.bool).tril()
        return ids, pos, mask, pred

    @torch.no_grad()
    def option_logprobs(self, prompt: list[int], options: tuple[str, ...],
                        paths: list[list[int] | None], trie: Any,
                        deltas: dict[int, torch.Tensor], prefix_len: int = 0) -> np.ndarray:
        """[C, options] log-probabilities (-inf: unreachable) under C conditions;
        `deltas[layer]` is [C, H]: what each condition adds at that steered layer."""
        reach = [j for j, p in enumerate(paths) if p is not None]
        ids, pos, mask, pred = self._tree(prompt, [paths[j] for j in reach])
        n_cond = next(iter(deltas.values())).shape[0]
        dev = self.b.device
        t_ids = torch.tensor([ids], device=dev)
        t_pos = torch.tensor([pos], device=dev)
        amask = mask.to(dev)[None, None]
        h = self.inner.embed_tokens(t_ids)
        pe = self.inner.rotary_emb(h, position_ids=t_pos)
        first = self.layers[0]
        for block in self.blocks[:first]:
            h = block(h, attention_mask=amask, position_embeddings=pe, position_ids=t_pos)
        h = h[0] if isinstance(h, tuple) else h
        self.block_passes += first / len(self.blocks)
        out = np.full((n_cond, len(options)), -np.inf)
        for s in range(0, n_cond, self.max_batch):
            rows = slice(s, min(n_cond, s + self.max_batch))
            out[rows] = self._tail(h, rows, deltas, amask, pe, t_pos, pred, reach, paths, trie,
                                   len(options))
        return out

    def _tail(self, h0, rows, deltas, amask, pe, t_pos, pred, reach, paths, trie, n_opt):
        """The blocks from the first steered layer up, for conditions `rows`."""
        first = self.layers[0]
        d = {layer: v[rows].to(h0.device, h0.dtype) for layer, v in deltas.items()}
        c = next(iter(d.values())).shape[0]
        h = h0.expand(c, -1, -1) + d[first][:, None, :]
        for k in range(first, len(self.blocks)):
            h = self.blocks[k](h, attention_mask=amask, position_embeddings=pe,
                               position_ids=t_pos)
            h = h[0] if isinstance(h, tuple) else h
            if k + 1 in d and k + 1 != first:
                h = h + d[k + 1][:, None, :]
        self.block_passes += c * (len(self.blocks) - first) / len(self.blocks)
        h = self.inner.norm(h)
        out = np.full((c, n_opt), -np.inf)
        for q, j in enumerate(reach):
            rows_needed = torch.tensor(pred[q], device=h.device)
            logits = self.head(h[:, rows_needed]).float()  # [c, steps, V]
            node, total = trie.root, torch.zeros(c)
            for step, tok in enumerate(paths[j]):
                masked = logits[:, step].masked_fill(~trie.allowed(node).to(h.device),
                                                     float("-inf"))
                total += torch.log_softmax(masked, dim=-1)[:, tok].cpu()
                node = node.children[tok]
            out[:, j] = total.numpy()
        return out


def _arm(backend: Any, decisions: list, steered: list[str], make: Any) -> tuple[float, list]:
    """Seconds and log-probabilities of the two phases `decision_checks` runs."""
    from steertown.verification.decisions import rescore

    scorer = make()
    t0 = time.perf_counter()
    first = rescore(backend, decisions, steered, 1, 1.0, only=("own", "none"), scorer=scorer)
    rest = tuple(n for n in first.names if n not in ("own", "none"))
    more = rescore(backend, decisions, steered, 1, 1.0, only=rest,
                   scorer=scorer if not isinstance(scorer, PreviousScorer) else make())
    seconds = time.perf_counter() - t0
    lps = [np.where(np.isnan(a), b, a) for a, b in zip(first.logprobs, more.logprobs,
                                                         strict=True)]
    return seconds, lps


def _max_diff(a: list, b: list) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        fin = np.isfinite(x) & np.isfinite(y)
        if not np.array_equal(np.isfinite(x), np.isfinite(y)):
            return float("inf")
        worst = max(worst, float(np.abs(x[fin] - y[fin]).max(initial=0.0)))
    return worst


def measure(table: Any, run_dir: Path, n_decisions: int = 16, reps: int = 2,
            threads: int = 0) -> dict:
    """Time the three arms on the first `n_decisions` sampled decisions of `run_dir`."""
    from steertown.config_loading import load_config
    from steertown.inference import get_backend
    from steertown.storage.run_dir import RunDir
    from steertown.verification.branch import BranchScorer
    from steertown.verification.decisions import sample_decisions

    run = RunDir(run_dir).require()
    cfg = load_config(run.read_manifest()["config"])
    cfg.model.num_threads = threads
    backend = get_backend(cfg)
    decisions = sample_decisions(run, 64, 0)[:n_decisions]
    steered = list(backend.traits)
    tokens = [len(backend.prompt_ids(d.system, d.user)) for d in decisions]
    arms = {"previous (a1e8601)": lambda: PreviousScorer(backend),
            "current, nothing kept": lambda: BranchScorer(backend, share=False),
            "current": lambda: BranchScorer(backend)}
    _arm(backend, decisions[:1], steered, arms["current"])  # warm up
    best: dict[str, float] = {}
    out: dict[str, list] = {}
    for _ in range(reps):
        for name, make in arms.items():
            s, lps = _arm(backend, decisions, steered, make)
            best[name] = min(best.get(name, float("inf")), s)
            out[name] = lps
    base = best["previous (a1e8601)"]
    conds = len(out["current"][0])
    for name, s in best.items():
        diff = _max_diff(out[name], out["previous (a1e8601)"])
        table.add("verify", f"{name}: {len(decisions)} decisions x {conds} conditions", s,
                  base / s, f"largest log-prob difference from previous {diff:.1e}")
    return {"run": str(run_dir), "decisions": len(decisions), "conditions": conds,
            "prompt_tokens_mean": float(np.mean(tokens)), "threads": torch.get_num_threads(),
            "seconds": best, "speedup": {k: base / v for k, v in best.items()},
            "max_abs_diff_vs_previous": {k: _max_diff(v, out["previous (a1e8601)"])
                                         for k, v in out.items()}}
