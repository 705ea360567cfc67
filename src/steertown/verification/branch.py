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

Work that several calls share is done once (issue 19, "cheaper than the run"):
- A shared prompt prefix (`prefix_len`: an agent's system block, the same in all its
  decisions): its keys and values are kept per condition (keyed by the condition's
  vectors), so the next decision of the same agent under the same steering runs only its
  own tokens through the blocks. Only the latest prefix is kept (decisions come agent by
  agent).
- The state at the first steered layer is kept per prompt, so scoring more conditions
  of a decision later (the verifier scores own and none first) skips the lower blocks.
- The last block runs only the positions whose logits are read (its keys and values
  still come from every position); the LM head runs once per distinct position.

Each of these computes the same function as the plain steered forward pass; only float
rounding differs (tests/test_branch.py compares them on the real model).

Cost per decision, with L blocks, k of them below the first steered layer and C
conditions: k + C x (L - k) block-passes of the prompt instead of C x L, less the shared
prefix. On SmolLM2 (30 blocks, steering at layer 16 = the output of block 16: k = 16) a
condition costs 14/30 of a pass; the conditions of one decision have one length, so
batching them pads nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from steertown.residual import decoder_layers


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [B, heads, S, d] at positions given by cos/sin [1, S, d]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


class _Prefix:
    """A shared prompt prefix: its state at the first steered layer, its keys/values in
    the lower blocks, and per condition (key: its vectors' bytes) in the upper blocks."""

    def __init__(self, ids: tuple[int, ...], h_first: torch.Tensor,
                 low_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.ids, self.h_first, self.low_kv = ids, h_first, low_kv
        self.high_kv: dict[bytes, list[tuple[torch.Tensor, torch.Tensor]]] = {}


class BranchScorer:
    """Scores decisions' options under per-condition residual-stream deltas."""

    def __init__(self, backend: Any, max_batch: int = 32, share: bool = True) -> None:
        self.b = backend
        self.model = backend.model
        self.inner = backend.model.model
        self.blocks = decoder_layers(backend.model)
        self.head = backend.model.get_output_embeddings()
        self.layers = sorted(backend.layers)  # "layer k" = output of block k - 1
        self.max_batch = max_batch
        self.share = share  # reuse prefixes and lower-block states across calls
        attn = self.blocks[0].self_attn
        self.head_dim = attn.head_dim
        self.n_heads = attn.q_proj.out_features // self.head_dim
        self.n_kv = attn.k_proj.out_features // self.head_dim
        self.token_blocks = 0  # tokens x blocks run, all conditions (cost accounting)
        self._prefixes: dict[tuple[int, ...], _Prefix] = {}
        self._latest: _Prefix | None = None  # the one prefix whose upper blocks are kept
        self._low: dict[tuple, torch.Tensor] = {}  # (prompt, paths) -> tree state at first

    def clear(self) -> None:
        """Forget the kept prefixes and lower-block states (memory)."""
        self._prefixes, self._latest, self._low = {}, None, {}

    # --- one decoder block, written out so it can take cached keys and skip rows ---

    def _block(self, k: int, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               mask: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
               rows: torch.Tensor | None = None, kv_only: bool = False):
        """Block k on h [B, S, H] (positions cos/sin [1, S, d]) attending to `past`
        keys/values and then to its own (bool `mask` [Sq, P + S]). Returns (output, (k, v)
        of these S positions); `rows`: only these positions' outputs; `kv_only`: only (k, v)."""
        blk, attn = self.blocks[k], self.blocks[k].self_attn
        b, s, _ = h.shape
        x = blk.input_layernorm(h)
        key = _rotate(attn.k_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2),
                      cos, sin)
        val = attn.v_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        if kv_only:
            return None, (key, val)
        if rows is not None:
            x, h, cos, sin, mask = x[:, rows], h[:, rows], cos[:, rows], sin[:, rows], mask[rows]
        q = _rotate(attn.q_proj(x).view(b, x.shape[1], self.n_heads, self.head_dim)
                    .transpose(1, 2), cos, sin)
        keys, vals = (key, val) if past is None else (torch.cat([past[0], key], dim=2),
                                                      torch.cat([past[1], val], dim=2))
        rep = self.n_heads // self.n_kv  # grouped-query attention: kv head j serves rep heads
        keys = keys[:, :, None].expand(-1, -1, rep, -1, -1).reshape(b, self.n_heads, -1,
                                                                     self.head_dim)
        vals = vals[:, :, None].expand(-1, -1, rep, -1, -1).reshape(b, self.n_heads, -1,
                                                                     self.head_dim)
        o = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask[None, None],
                                           scale=attn.scaling)
        h = h + attn.o_proj(o.transpose(1, 2).reshape(b, x.shape[1], -1))
        return h + blk.mlp(blk.post_attention_layernorm(h)), (key, val)

    def _positions(self, pos: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.b.device
        probe = torch.zeros(1, 1, 1, device=dev, dtype=self.head.weight.dtype)
        return self.inner.rotary_emb(probe, position_ids=torch.tensor([pos], device=dev))

    # --- the token tree of one decision ---

    @staticmethod
    def _tree(prompt: list[int], paths: list[list[int]], start: int = 0):
        """The tokens after `start` (the rest of the prompt, then each option's tokens but
        its last), their positions, the bool mask [S, start + S] (every row sees the whole
        prefix; option tokens see the prompt and their own earlier tokens), and for each
        (option, step) the row whose logits predict that step's token."""
        n = len(prompt)
        m = n - start
        ids, pos = list(prompt[start:]), list(range(start, n))
        pred: list[list[int]] = []
        blocks: list[tuple[int, int]] = []
        for path in paths:
            first = len(ids)
            body = path[:-1]
            ids += body
            pos += [n + s for s in range(len(body))]
            blocks.append((first, len(ids)))
            pred.append([m - 1] + list(range(first, first + len(body))))
        size = len(ids)
        mask = torch.zeros(size, start + size, dtype=torch.bool)
        mask[:, :start] = True
        mask[:m, start:start + m] = torch.ones(m, m, dtype=torch.bool).tril()
        for first, end in blocks:
            mask[first:end, start:start + m] = True
            mask[first:end, start + first:start + end] = torch.ones(
                end - first, end - first, dtype=torch.bool).tril()
        return ids, pos, mask, pred

    # --- scoring ---

    @torch.no_grad()
    def option_logprobs(self, prompt: list[int], options: tuple[str, ...],
                        paths: list[list[int] | None], trie: Any,
                        deltas: dict[int, torch.Tensor], prefix_len: int = 0) -> np.ndarray:
        """[C, options] log-probabilities (-inf: unreachable) under C conditions;
        `deltas[layer]` is [C, H]: what each condition adds at that steered layer.
        `prefix_len`: the first tokens of `prompt` are a prefix other calls share (an
        agent's system block); their work is kept for them."""
        reach = [j for j, p in enumerate(paths) if p is not None]
        n_cond = next(iter(deltas.values())).shape[0]
        out = np.full((n_cond, len(options)), -np.inf)
        if not reach:  # no option can be generated: nothing to score
            return out
        start = min(prefix_len, len(prompt) - 1) if self.share else 0
        ids, pos, mask, pred = self._tree(prompt, [paths[j] for j in reach], start)
        prefix = self._prefix_state(tuple(prompt[:start])) if start else None
        h0 = self._lower(prompt, paths, ids, pos, mask, prefix)
        for s in range(0, n_cond, self.max_batch):
            rows = slice(s, min(n_cond, s + self.max_batch))
            d = {layer: v[rows].to(h0.device, h0.dtype) for layer, v in deltas.items()}
            past = self._upper_prefix(prefix, d) if prefix is not None else None
            out[rows] = self._upper(h0, d, pos, mask, past, pred, reach, paths, trie,
                                    len(options))
        return out

    def _prefix_state(self, ids: tuple[int, ...]) -> _Prefix:
        """The prefix's lower-block state (kept per prefix); only the latest prefix keeps
        its upper-block keys and values (they are per condition, so larger)."""
        prefix = self._prefixes.get(ids)
        if prefix is None:
            n = len(ids)
            cos, sin = self._positions(list(range(n)))
            causal = torch.ones(n, n, dtype=torch.bool, device=self.b.device).tril()
            h = self.inner.embed_tokens(torch.tensor([list(ids)], device=self.b.device))
            low_kv = []
            for k in range(self.layers[0]):
                h, kv = self._block(k, h, cos, sin, causal)
                low_kv.append(kv)
            self.token_blocks += n * self.layers[0]
            prefix = self._prefixes[ids] = _Prefix(ids, h, low_kv)
        if self._latest is not prefix:
            if self._latest is not None:
                self._latest.high_kv = {}
            self._latest = prefix
        return prefix

    def _lower(self, prompt, paths, ids, pos, mask, prefix) -> torch.Tensor:
        """The tree's state at the first steered layer [1, S, H] (kept per prompt)."""
        key = (tuple(prompt), tuple(tuple(p) if p else () for p in paths), len(pos))
        if key in self._low:
            return self._low[key]
        cos, sin = self._positions(pos)
        m = mask.to(self.b.device)
        h = self.inner.embed_tokens(torch.tensor([ids], device=self.b.device))
        for k in range(self.layers[0]):
            h, _ = self._block(k, h, cos, sin, m, prefix.low_kv[k] if prefix else None)
        self.token_blocks += len(ids) * self.layers[0]
        if self.share:
            self._low[key] = h
        return h

    def _upper_prefix(self, prefix: _Prefix, d: dict[int, torch.Tensor]):
        """Per upper block, the prefix's (k, v) [c, kv heads, P, d] under each condition:
        kept ones reused, the others computed as one batch and kept."""
        first, n_blocks = self.layers[0], len(self.blocks)
        keys = [b"".join(d[layer][r].cpu().numpy().tobytes() for layer in sorted(d))
                for r in range(next(iter(d.values())).shape[0])]
        todo = [r for r, key in enumerate(keys) if key not in prefix.high_kv]
        if todo:
            n = len(prefix.ids)
            cos, sin = self._positions(list(range(n)))
            causal = torch.ones(n, n, dtype=torch.bool, device=self.b.device).tril()
            h = prefix.h_first.expand(len(todo), -1, -1) + d[first][todo][:, None, :]
            per_block = []
            for k in range(first, n_blocks):
                last = k == n_blocks - 1  # the last block's outputs are never read here
                h_next, kv = self._block(k, h, cos, sin, causal, kv_only=last)
                per_block.append(kv)
                if not last:
                    h = h_next + (d[k + 1][todo][:, None, :] if k + 1 in d else 0)
            self.token_blocks += len(todo) * n * (n_blocks - first)
            for i, r in enumerate(todo):
                prefix.high_kv[keys[r]] = [(kk[i:i + 1], vv[i:i + 1]) for kk, vv in per_block]
        got = [prefix.high_kv[key] for key in keys]
        return [(torch.cat([g[b][0] for g in got]), torch.cat([g[b][1] for g in got]))
                for b in range(n_blocks - first)]

    def _upper(self, h0, d, pos, mask, past, pred, reach, paths, trie, n_opt):
        """The blocks from the first steered layer up, for the conditions in `d`, and
        the options' renormalised log-probabilities from the rows that predict them."""
        first, n_blocks = self.layers[0], len(self.blocks)
        c = next(iter(d.values())).shape[0]
        cos, sin = self._positions(pos)
        m = mask.to(h0.device)
        needed = sorted({r for rows in pred for r in rows})
        where = {r: i for i, r in enumerate(needed)}
        h = h0.expand(c, -1, -1) + d[first][:, None, :]
        for k in range(first, n_blocks):
            last = k == n_blocks - 1
            h, _ = self._block(k, h, cos, sin, m, past[k - first] if past else None,
                               rows=torch.tensor(needed, device=h.device) if last else None)
            if not last and k + 1 in d:
                h = h + d[k + 1][:, None, :]
        self.token_blocks += c * len(pos) * (n_blocks - first)
        logits = self.head(self.inner.norm(h)).float()  # [c, needed rows, V]
        out = np.full((c, n_opt), -np.inf)
        for q, j in enumerate(reach):
            node, total = trie.root, torch.zeros(c)
            for step, tok in enumerate(paths[j]):
                row = logits[:, where[pred[q][step]]]
                masked = row.masked_fill(~trie.allowed(node).to(row.device), float("-inf"))
                total += torch.log_softmax(masked, dim=-1)[:, tok].cpu()
                node = node.children[tok]
            out[:, j] = total.numpy()
        return out
