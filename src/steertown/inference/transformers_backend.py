"""The torch backend: a HF causal LM with per-row activation steering (forward hooks).

The decode loop is `DecodeLoop` (inference.decode_loop); why a custom loop instead of
`generate()`: every row needs its own sampling generator
(seeded from `request.seed`, so a row's tokens do not depend on its batch neighbours),
its own repetition-penalty history (HF's processor would also penalise the left-pad
tokens, which differ between batch and single runs), its own token limit and its own
early stop. Finished rows leave the batch (KV cache rows and steering rows are dropped
together), so short answers stop costing compute.

Exactness: in float32 on CPU (the default there) a row's logits are bit-identical whatever
its batch neighbours and padding, so batched greedy and seeded sampled outputs equal the
single-row outputs exactly (tested). bfloat16 keeps this only for rows of equal prompt
length. On CUDA nothing is promised: float32 there does not make kernels batch-invariant
(cuBLAS may pick other algorithms for other batch shapes), and it is untested.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steertown.config import TRAITS, RunConfig
from steertown.inference.backend import GenerationRequest
from steertown.inference.decode_loop import DecodeLoop
from steertown.inference.model_loading import load_model
from steertown.inference.prefix_cache import PrefixKVCache, assemble, split_cache_rows
from steertown.residual import captured, decoder_layers, left_pad
from steertown.steering.contrast_data import load_contrast_data
from steertown.steering.hooks import SteeringHooks
from steertown.steering.vectors import TraitVectors, load_or_compute

LOAD_COUNT = 0  # models loaded in this process (preflight: "model loaded once")


class _TorchStepper:
    """Decode steps on the HF model with its KV cache; steering rows follow the batch."""

    def __init__(self, backend: TransformersBackend, cache: Any, mask: torch.Tensor,
                 next_pos: torch.Tensor) -> None:
        self.b, self.cache, self.mask, self.next_pos = backend, cache, mask, next_pos

    def keep(self, rows: list[int]) -> None:
        idx = torch.tensor(rows, device=self.b.device)
        self.cache.batch_select_indices(idx)
        self.b.hooks.select_rows(idx)
        self.mask, self.next_pos = self.mask[idx], self.next_pos[idx]

    def step(self, tokens: list[int]) -> torch.Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        ids = torch.tensor(tokens, device=self.b.device)[:, None]
        out = self.b.model(input_ids=ids, attention_mask=self.mask, position_ids=self.next_pos,
                           cache=self.cache, use_cache=True)
        self.next_pos = self.next_pos + 1
        return out.logits[:, -1, :]


class TransformersBackend(DecodeLoop):
    """Backend protocol on a HF causal LM; loads model, vectors and hooks once."""

    name = "transformers"
    supports_placebo = True  # _open steers placebo rows on their basis (basis_key)
    # Prefill computes the LM head for the last position only (the one sampled from):
    # the head is ~21% of SmolLM2-135M's FLOPs per token, and full prefill logits of a
    # batch of 16 x 250 tokens are ~0.8 GB of float32. False = every position (bench A/B).
    last_logits_only = True

    def __init__(self, cfg: RunConfig, vectors: TraitVectors | None = None) -> None:
        global LOAD_COUNT
        self.cfg = cfg
        self.loaded = load_model(cfg)
        LOAD_COUNT += 1
        self.model = self.loaded.model
        self.tokenizer = self.loaded.tokenizer
        self.layers: list[int] = list(cfg.layers)
        self.traits: list[str] = list(TRAITS)
        self.device = next(self.model.parameters()).device
        n_blocks = len(decoder_layers(self.model))
        if max(self.layers) > n_blocks:
            raise ValueError(f"layers {self.layers}: the model has only {n_blocks} decoder layers")
        t0 = time.perf_counter()
        self.vectors = vectors or load_or_compute(
            self.model, self.tokenizer, self.layers, load_contrast_data(),
            cfg.steering.vectors_dir, self.loaded.model_id, self.loaded.dtype)
        self.vectors_seconds = round(time.perf_counter() - t0, 2)
        self.hooks = SteeringHooks(
            self.model, self.layers,
            {layer: self.vectors.steering_matrix(layer) for layer in self.layers},
            self.vectors.traits)
        self.traits = list(self.vectors.traits)
        self.prefix_kv = PrefixKVCache()
        head = self.model.get_output_embeddings()
        # out_features, not weight.shape: a bitsandbytes 4-bit head stores packed weights.
        self.vocab_size = int(getattr(head, "out_features", 0) or head.weight.shape[0])
        # `logits_to_keep=1` hands the head a strided [B, 1, H] view; for bfloat16 torch's
        # matmul then broadcasts the [V, H] weight to [B, H, V] and copies it (B x 57 MB
        # for SmolLM2): 7.5 s of a 10 s batch measured. A contiguous input folds to one mm.
        head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
        self._init_decoding()

    # ----- steering access for verification -----
    def basis_key(self, placebo_seed: int | None) -> tuple[str, int] | None:
        """The hooks' basis for a row: None = trait vectors, else the seeded placebo
        directions (steering.mode=placebo), built and registered on first use."""
        if placebo_seed is None:
            return None
        key = ("placebo", int(placebo_seed))
        if not self.hooks.has_basis(key):
            self.hooks.add_basis(key, {layer: self.vectors.placebo_matrix(layer, placebo_seed)
                                       for layer in self.layers})
        return key

    @contextmanager
    def steered(self, alphas: torch.Tensor | Sequence[dict[str, float]] | None,
                placebo_seeds: Sequence[int | None] | None = None) -> Iterator[None]:
        """Forward passes inside use per-row `alphas` ([B, T] tensor or list of dicts),
        on the trait vectors or, per row, on a placebo basis."""
        if alphas is not None and not isinstance(alphas, torch.Tensor):
            alphas = self.alphas_for(alphas)
        bases = None if placebo_seeds is None else [self.basis_key(s) for s in placebo_seeds]
        with self.hooks.steered(alphas, bases):
            yield

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return left_pad(seqs, self._pad_id, self.device)

    @torch.no_grad()
    def hidden_at(self, layer: int, seqs: Sequence[list[int] | str],
                  alphas: torch.Tensor | Sequence[dict[str, float]] | None = None) -> list[torch.Tensor]:
        """Output of decoder layer `layer` (after steering) per row, unpadded: [n_i, H] float32.

        Rows are token-id lists or plain texts (tokenized without special tokens).
        """
        seqs = [self.tokenizer(s, add_special_tokens=False)["input_ids"] if isinstance(s, str)
                else list(s) for s in seqs]
        ids, mask, pos = self._left_pad(seqs)
        # The capture is registered after the steering hook, so it sees the sum.
        with captured(self.model, [layer]) as got, self.steered(alphas):
            self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
        width = ids.shape[1]
        return [got[layer][r, width - len(s):].cpu() for r, s in enumerate(seqs)]

    @torch.no_grad()
    def reply_logprobs(self, system: str, user: str, replies: list[str],
                       alphas: torch.Tensor | Sequence[dict[str, float]] | None = None) -> list[float]:
        """Sum log-prob of each reply after the chat prompt (per-row alphas optional)."""
        prompt = self.prompt_ids(system, user)
        tails = [self.tokenizer(r, add_special_tokens=False)["input_ids"] for r in replies]
        ids, mask, pos = self._left_pad([prompt + t for t in tails])
        with self.steered(alphas):
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        out = []
        for r, t in enumerate(tails):
            n = len(t)
            tgt = ids[r, -n:]
            out.append(float(logp[r, -n:].gather(-1, tgt[:, None]).sum()))
        return out

    # ----- generation (the loop itself is DecodeLoop.generate_batch) -----
    def _open(self, requests: list[GenerationRequest], prompts: list[list[int]],
              alphas: torch.Tensor) -> tuple[torch.Tensor, _TorchStepper, list[str]]:
        bases = [self.basis_key(r.placebo_seed) for r in requests]
        logits, cache, mask, next_pos, state = self._prefill(requests, prompts, alphas, bases)
        return logits, _TorchStepper(self, cache, mask, next_pos), state

    def _close(self) -> None:
        self.hooks.set_alphas(None)

    def _prefill(self, requests: list[GenerationRequest], prompts: list[list[int]],
                 alphas: torch.Tensor, bases: list) -> tuple[torch.Tensor, Any, torch.Tensor,
                                                             torch.Tensor, list[str]]:
        """Prompt forward pass -> (last logits, KV cache, mask, next positions, prefix state)."""
        if self.cfg.optimization.prefix_cache:
            done = self._prefill_two_phase(requests, prompts, alphas, bases)
            if done is not None:
                return done
        ids, mask, pos = self._left_pad(prompts)
        self.hooks.set_alphas(alphas, bases)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         logits_to_keep=self._keep)
        return out.logits[:, -1, :], out.cache, mask, pos[:, -1:] + 1, ["off"] * len(prompts)

    def _prefill_two_phase(self, requests, prompts, alphas, bases):
        """Prefix KV from the cache (misses computed row by row), then the rest."""
        pre = [self.prefix_ids(r.system) for r in requests]
        if any(len(p) >= len(q) or q[:len(p)] != p for p, q in zip(pre, prompts, strict=True)):
            return None  # template does not split cleanly: single-phase prefill
        # The basis is part of the key: equal alphas on placebo directions are another prefix.
        keys = [(*PrefixKVCache.key(p, alphas[i]), bases[i]) for i, p in enumerate(pre)]
        kvs, state, todo = self.prefix_kv.lookup(keys)
        if todo:
            # Misses are computed one row at a time: a prefix's KV must not depend on which
            # other misses share its batch (padding and GEMM shapes shift the last bits), or
            # a resumed run, where every prefix is a miss, could sample a different token.
            fresh = {}
            for i in todo:
                ids, mask, pos = self._left_pad([pre[i]])
                self.hooks.set_alphas(alphas[i:i + 1], [bases[i]])
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                 use_cache=True, logits_to_keep=self._keep)  # only the KV is used
                fresh[keys[i]] = split_cache_rows(out.cache, [len(pre[i])])[0]
            for k, kv in fresh.items():
                self.prefix_kv.put(k, kv)
            kvs = [kv if kv is not None else fresh[keys[i]] for i, kv in enumerate(kvs)]
        width = max(len(p) for p in pre)
        rest = [q[len(p):] for p, q in zip(pre, prompts, strict=True)]
        cache = assemble(self.model.config, kvs, width)
        # Left-padded prefix (the cached KV) then the left-padded rest; the rest's
        # positions continue after each row's own prefix length.
        _, pre_mask, _ = self._left_pad(pre)
        ids, rest_mask, rest_pos = self._left_pad(rest)
        mask = torch.cat([pre_mask, rest_mask], dim=1)
        pre_len = pre_mask.sum(-1, keepdim=True)
        pos = torch.where(rest_mask.bool(), rest_pos + pre_len, torch.zeros_like(rest_pos))
        self.hooks.set_alphas(alphas, bases)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                         use_cache=True, logits_to_keep=self._keep)
        return out.logits[:, -1, :], out.cache, mask, pos[:, -1:] + 1, state

    @property
    def _keep(self) -> int:
        """`logits_to_keep` for prefill passes: 1 = last position, 0 = all."""
        return 1 if self.last_logits_only else 0

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about the model and the steering."""
        lm, vec = self.loaded, self.vectors
        return {
            "name": self.cfg.model.name, "backend": self.name, "model_id": lm.model_id, "source": lm.source,
            "device": lm.device, "dtype": lm.dtype, "dtype_reason": lm.dtype_reason,
            "resolved": dict(self.cfg.resolved), "quantization": lm.quantization,
            "load_seconds": lm.load_seconds, "from_cache": lm.from_cache, "notes": lm.notes,
            "layers": self.layers, "traits": self.traits, "vector_id": vec.vector_id(),
            "vector_file": vec.meta.get("file"), "vectors_seconds": self.vectors_seconds,
            "data_hash": vec.meta.get("data_hash"),
            "unit": {str(k): round(v, 4) for k, v in vec.unit.items()},
            "calibration": vec.meta.get("calibration"),
            "steered_positions": "all (prompt and generated)",
            "prefix_cache": ("two-phase prefill, per-agent steered prefix KV reused"
                             if self.cfg.optimization.prefix_cache else "off"),
            "batch_exactness": (
                "exact (float32 on CPU, tested)" if lm.dtype == "float32" and lm.device == "cpu"
                else "not guaranteed (float32 on CUDA: kernels may depend on the batch shape; "
                     "untested)" if lm.dtype == "float32"
                else "exact only for equal-length prompts (tested on CPU)"),
            "sampling": {"temperature": self.cfg.inference.temperature,
                         "top_p": self.cfg.inference.top_p,
                         "repetition_penalty": self.cfg.inference.repetition_penalty,
                         "seeded": "per row (request.seed)"},
        }
