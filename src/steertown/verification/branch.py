"""Option probabilities of one decision under many steerings, computed as one branched pass.

Every condition of a decision (own steering, none, each trait's vector, random
directions) sees the same prompt, and steering is added only at and above the first
steered layer, so the decoder blocks below it compute the same thing for every condition.
`BranchScorer` runs those blocks once (batch 1), then copies the hidden state once per
condition, adds each condition's vector and runs the remaining blocks as one batch.

The options ride in the same pass as a token tree: after the prompt come each option's
tokens (all but its last), each block attending to the prompt and to its own earlier
tokens only (a 4-D attention mask; positions continue from the prompt). So the logits
that predict each option token are computed once, with no KV-cache copies per option.

Probabilities are renormalised over the tokens the option trie allows at each step,
exactly as at generation time (`OptionTrie.logprob`), so re-scoring under the agent's own
steering reproduces the logged log-probability of the chosen option (float32).

Cost per decision, with L blocks, k of them below the first steered layer and C
conditions: k + C x (L - k) block-passes of the prompt instead of C x L. On SmolLM2
(30 blocks, steering at layer 16 = the output of block 16: k = 16) a condition costs 14/30
of a pass; the conditions of one decision have one length, so batching them pads nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from steertown.residual import decoder_layers


class BranchScorer:
    """Scores decisions' options under per-condition residual-stream deltas."""

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
                        deltas: dict[int, torch.Tensor]) -> np.ndarray:
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
