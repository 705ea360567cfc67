"""The real backend: a causal LM with per-row activation steering and a custom decode loop.

Why a custom loop instead of `generate()`: every row needs its own sampling generator
(seeded from `request.seed`, so a row's tokens do not depend on its batch neighbours),
its own repetition-penalty history (HF's processor would also penalise the left-pad
tokens, which differ between batch and single runs), its own token limit and its own
early stop. Finished rows leave the batch (KV cache rows and steering rows are dropped
together), so short answers stop costing compute.

Exactness: in float32 (the CPU default) a row's logits are bit-identical whatever its
batch neighbours and padding, so batched greedy and seeded sampled outputs equal the
single-row outputs exactly. bfloat16 keeps this only for rows of equal prompt length.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steertown.config import TRAITS, RunConfig
from steertown.inference.backend import GenerationRequest, GenerationResult
from steertown.inference.constrained import OptionTrie, sentence_done
from steertown.inference.model_loading import load_model
from steertown.inference.prefix_cache import PrefixKVCache, assemble, split_cache_rows
from steertown.inference.sampling import apply_repetition_penalty, choose_tokens
from steertown.steering.contrast_data import load_contrast_data
from steertown.steering.hooks import SteeringHooks, decoder_layers
from steertown.steering.vectors import TraitVectors, load_or_compute

LOAD_COUNT = 0  # models loaded in this process (preflight: "model loaded once")


class TransformersBackend:
    """Backend protocol on a HF causal LM; loads model, vectors and hooks once."""

    name = "transformers"
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
        tok = self.tokenizer
        self._stop_ids = {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>"))
                          if isinstance(i, int) and i >= 0}
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self._newline: dict[int, bool] = {}
        self._tries: dict[tuple[str, ...], OptionTrie] = {}
        self._prompt_cache: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self._prefix_ids: dict[str, list[int]] = {}
        self.prefix_kv = PrefixKVCache()
        head = self.model.get_output_embeddings()
        # out_features, not weight.shape: a bitsandbytes 4-bit head stores packed weights.
        self.vocab_size = int(getattr(head, "out_features", 0) or head.weight.shape[0])

    # ----- prompts -----
    def prompt_ids(self, system: str, user: str) -> list[int]:
        """Chat-template token ids (system + user + assistant header), LRU-cached."""
        key = (system, user)
        ids = self._prompt_cache.get(key)
        if ids is None:
            msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            out = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            ids = list(out["input_ids"] if not isinstance(out, list) else out)
            self._prompt_cache[key] = ids
            if len(self._prompt_cache) > 4096:
                self._prompt_cache.popitem(last=False)
        return ids

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_ids(request.system, request.user))

    def alphas_for(self, steerings: Sequence[dict[str, float]]) -> torch.Tensor:
        """[B, T] alphas from per-row trait dicts (missing traits = 0)."""
        return torch.tensor([[float(s.get(t, 0.0)) for t in self.traits] for s in steerings],
                            dtype=torch.float32)

    # ----- steering access for verification -----
    @contextmanager
    def steered(self, alphas: torch.Tensor | Sequence[dict[str, float]] | None) -> Iterator[None]:
        """Forward passes inside use per-row `alphas` ([B, T] tensor or list of dicts)."""
        if alphas is not None and not isinstance(alphas, torch.Tensor):
            alphas = self.alphas_for(alphas)
        with self.hooks.steered(alphas):
            yield

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.tensor([[self._pad_id] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    @torch.no_grad()
    def hidden_at(self, layer: int, seqs: Sequence[list[int] | str],
                  alphas: torch.Tensor | Sequence[dict[str, float]] | None = None) -> list[torch.Tensor]:
        """Output of decoder layer `layer` (after steering) per row, unpadded: [n_i, H] float32.

        Rows are token-id lists or plain texts (tokenized without special tokens).
        """
        seqs = [self.tokenizer(s, add_special_tokens=False)["input_ids"] if isinstance(s, str)
                else list(s) for s in seqs]
        captured: dict[str, torch.Tensor] = {}
        block = decoder_layers(self.model)[layer - 1]

        def grab(_m, _a, out):  # registered after the steering hook, so it sees the sum
            captured["h"] = (out[0] if isinstance(out, tuple) else out).float().cpu()

        handle = block.register_forward_hook(grab)
        try:
            ids, mask, pos = self._left_pad(seqs)
            with self.steered(alphas):
                self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
        finally:
            handle.remove()
        width = ids.shape[1]
        return [captured["h"][r, width - len(s):] for r, s in enumerate(seqs)]

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

    # ----- generation -----
    def _has_newline(self, tok_id: int) -> bool:
        v = self._newline.get(tok_id)
        if v is None:
            v = self._newline[tok_id] = "\n" in self.tokenizer.decode([tok_id])
        return v

    @torch.no_grad()
    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate all rows together; each row's tokens equal its single-row output."""
        if not requests:
            return []
        inf = self.cfg.inference
        prompts = [self.prompt_ids(r.system, r.user) for r in requests]
        steer = [r.steering if self.cfg.steering.enabled else {} for r in requests]
        alphas = self.alphas_for(steer)
        gens = []
        for r in requests:
            g = torch.Generator(device="cpu")
            g.manual_seed(int(r.seed) & 0xFFFF_FFFF_FFFF_FFFF)
            gens.append(g)
        limits = [max(1, int(r.max_new_tokens)) for r in requests]
        # Stop at the end of the action line (first newline after some content).
        line_stop = [inf.adaptive_tokens and r.stop_at_newline for r in requests]
        sentence_stop = [stop and inf.stop_at_sentence for stop in line_stop]
        tries = [self._trie(r.options) for r in requests]
        nodes = [t.root if t is not None else None for t in tries]  # None = free text
        caps = [{k.lower(): v for k, v in r.token_caps.items()} for r in requests]
        out_ids: list[list[int]] = [[] for _ in requests]
        chosen_option = [""] * len(requests)
        option_lp = [0.0 if t is not None else float("nan") for t in tries]
        vocab = self.vocab_size
        seen = torch.zeros(len(requests), vocab, dtype=torch.bool)
        for i, p in enumerate(prompts):
            seen[i, p] = True
        stop_reason = ["length"] * len(requests)
        active = list(range(len(requests)))  # batch position -> request index
        t0 = time.perf_counter()
        try:
            logits, cache, mask, next_pos, prefix_state = self._prefill(requests, prompts, alphas)
            while True:
                last = logits.float().cpu()
                raw = last  # before penalty/temperature: what decision replay re-scores
                rows = torch.tensor(active)
                last = apply_repetition_penalty(last, seen[rows], inf.repetition_penalty)
                for b, i in enumerate(active):
                    if nodes[i] is not None:
                        last[b] = last[b].masked_fill(~tries[i].allowed(nodes[i]), float("-inf"))
                chosen = choose_tokens(last, inf.temperature, inf.top_p, [gens[i] for i in active])
                new_tokens, keep = [], []
                for b, (i, tok) in enumerate(zip(active, chosen, strict=True)):
                    out_ids[i].append(tok)
                    seen[i, tok] = True
                    option = None
                    if nodes[i] is not None:
                        option_lp[i] += tries[i].logprob(raw[b], nodes[i], tok)
                        nodes[i], option = OptionTrie.advance(nodes[i], tok)
                        chosen_option[i] = option or ""
                    if caps[i] and len(out_ids[i]) == 1:  # adaptive limit by action word
                        word = self._text(out_ids[i]).strip().strip(":").lower()
                        limits[i] = min(limits[i], caps[i].get(word, limits[i]))
                    if option is not None and not OptionTrie.continues(option):
                        stop_reason[i] = "option"
                    elif tok in self._stop_ids:
                        stop_reason[i] = "eos"
                    elif line_stop[i] and self._has_newline(tok) and self._text(out_ids[i]).strip():
                        stop_reason[i] = "newline"
                    elif sentence_stop[i] and sentence_done(self._text(out_ids[i])):
                        stop_reason[i] = "sentence"
                    elif len(out_ids[i]) >= limits[i]:
                        stop_reason[i] = "length"
                    else:
                        keep.append(b)
                        new_tokens.append(tok)
                if not keep:
                    break
                if len(keep) < len(active):
                    idx = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(idx)
                    self.hooks.select_rows(idx)
                    mask, next_pos = mask[idx], next_pos[idx]
                    active = [active[b] for b in keep]
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                step_ids = torch.tensor(new_tokens, device=self.device)[:, None]
                out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos,
                                 cache=cache, use_cache=True)
                logits = out.logits[:, -1, :]
                next_pos = next_pos + 1
        finally:
            self.hooks.set_alphas(None)
        elapsed = time.perf_counter() - t0
        results = []
        for i, r in enumerate(requests):
            text = self._text(out_ids[i])
            if line_stop[i]:
                text = text.strip().split("\n", 1)[0]
            results.append(GenerationResult(
                request_id=r.request_id, text=text.strip(), tokens_in=len(prompts[i]),
                tokens_out=len(out_ids[i]),
                extra={"stop": stop_reason[i], "batch_size": len(requests),
                       "prefix_cache": prefix_state[i],
                       "batch_seconds": round(elapsed, 4),
                       "alphas": dict(zip(self.traits, alphas[i].tolist(), strict=True))},
                option=chosen_option[i], option_logprob=option_lp[i]))
        return results

    def prefix_ids(self, system: str) -> list[int]:
        """Token ids of the chat-template system block (the reusable prefix)."""
        ids = self._prefix_ids.get(system)
        if ids is None:
            out = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": system}], add_generation_prompt=False, tokenize=True)
            ids = self._prefix_ids[system] = list(out["input_ids"] if not isinstance(out, list) else out)
        return ids

    def _prefill(self, requests: list[GenerationRequest], prompts: list[list[int]],
                 alphas: torch.Tensor) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor, list[str]]:
        """Prompt forward pass -> (last logits, KV cache, mask, next positions, prefix state)."""
        if self.cfg.optimization.prefix_cache:
            done = self._prefill_two_phase(requests, prompts, alphas)
            if done is not None:
                return done
        ids, mask, pos = self._left_pad(prompts)
        self.hooks.set_alphas(alphas)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                         logits_to_keep=self._keep)
        return out.logits[:, -1, :], out.cache, mask, pos[:, -1:] + 1, ["off"] * len(prompts)

    def _prefill_two_phase(self, requests, prompts, alphas):
        """Prefix KV from the cache (or one batched pass for the misses), then the rest."""
        pre = [self.prefix_ids(r.system) for r in requests]
        if any(len(p) >= len(q) or q[:len(p)] != p for p, q in zip(pre, prompts, strict=True)):
            return None  # template does not split cleanly: single-phase prefill
        keys = [PrefixKVCache.key(p, alphas[i]) for i, p in enumerate(pre)]
        kvs = [self.prefix_kv.get(k) for k in keys]
        state = ["hit" if kv is not None else "miss" for kv in kvs]
        todo: dict[tuple, int] = {}
        for i, kv in enumerate(kvs):
            if kv is None:
                todo.setdefault(keys[i], i)
        if todo:
            idx = list(todo.values())
            ids, mask, pos = self._left_pad([pre[i] for i in idx])
            self.hooks.set_alphas(alphas[idx])
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                             logits_to_keep=self._keep)  # only the KV is used
            fresh = dict(zip([keys[i] for i in idx],
                             split_cache_rows(out.cache, [len(pre[i]) for i in idx]), strict=True))
            for k, kv in fresh.items():
                self.prefix_kv.put(k, kv)
            kvs = [kv if kv is not None else fresh[keys[i]] for i, kv in enumerate(kvs)]
        self.prefix_kv.hits += state.count("hit")
        self.prefix_kv.misses += state.count("miss")
        width = max(len(p) for p in pre)
        rest = [q[len(p):] for p, q in zip(pre, prompts, strict=True)]
        s_w = max(len(t) for t in rest)
        cache = assemble(self.model.config, kvs, width)
        dev = self.device
        ids = torch.tensor([[self._pad_id] * (s_w - len(t)) + t for t in rest], device=dev)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) + [0] * (s_w - len(t)) + [1] * len(t)
                             for p, t in zip(pre, rest, strict=True)], device=dev)
        pos = torch.tensor([[0] * (s_w - len(t)) + list(range(len(p), len(p) + len(t)))
                            for p, t in zip(pre, rest, strict=True)], device=dev)
        self.hooks.set_alphas(alphas)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache,
                         use_cache=True, logits_to_keep=self._keep)
        return out.logits[:, -1, :], out.cache, mask, pos[:, -1:] + 1, state

    @property
    def _keep(self) -> int:
        """`logits_to_keep` for prefill passes: 1 = last position, 0 = all."""
        return 1 if self.last_logits_only else 0

    def _trie(self, options: tuple[str, ...]) -> OptionTrie | None:
        """The (cached) option trie of a request; None when unconstrained."""
        if not options:
            return None
        trie = self._tries.get(options)
        if trie is None:
            if len(self._tries) > 4096:
                self._tries.clear()
            vocab = self.model.get_output_embeddings().weight.shape[0]
            trie = self._tries[options] = OptionTrie(options, self.tokenizer, vocab)
        return trie

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about the model and the steering."""
        lm, vec = self.loaded, self.vectors
        return {
            "name": self.cfg.model.name, "backend": self.name, "model_id": lm.model_id, "source": lm.source,
            "device": lm.device, "dtype": lm.dtype, "quantization": lm.quantization,
            "load_seconds": lm.load_seconds, "from_cache": lm.from_cache, "notes": lm.notes,
            "layers": self.layers, "traits": self.traits, "vector_id": vec.vector_id(),
            "vector_file": vec.meta.get("file"), "vectors_seconds": self.vectors_seconds,
            "data_hash": vec.meta.get("data_hash"),
            "unit": {str(k): round(v, 4) for k, v in vec.unit.items()},
            "calibration": vec.meta.get("calibration"),
            "steered_positions": "all (prompt and generated)",
            "prefix_cache": ("two-phase prefill, per-agent steered prefix KV reused"
                             if self.cfg.optimization.prefix_cache else "off"),
            "batch_exactness": ("exact (float32)" if lm.dtype == "float32"
                                else "exact only for equal-length prompts"),
            "sampling": {"temperature": self.cfg.inference.temperature,
                         "top_p": self.cfg.inference.top_p,
                         "repetition_penalty": self.cfg.inference.repetition_penalty,
                         "seeded": "per row (request.seed)"},
        }
