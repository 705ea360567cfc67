"""The per-row decode loop shared by every real backend (torch, ONNX Runtime).

A backend supplies the model passes: `_open` runs the prompt forward pass for a batch
(with each row's steering) and returns the last-position logits and a `Stepper` that
feeds one new token per active row. Everything that decides *what* a row generates
lives here, once: its own seeded generator, repetition-penalty history, option trie
and option log-probability, adaptive token cap, line stop and early exit. Finished rows
leave the batch (the stepper drops their cache and steering rows), so short answers
stop costing compute. A row's choices depend only on its own logits, so a batched row
equals its single-row output whenever the runtime's logits for it are batch-independent.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from steertown.inference.backend import GenerationRequest, GenerationResult
from steertown.inference.constrained import OptionTrie, sentence_done
from steertown.inference.sampling import apply_repetition_penalty, choose_tokens
from steertown.residual import chat_ids, pad_id


class Stepper(Protocol):
    """One decode step at a time for the rows still active."""

    def step(self, tokens: list[int]) -> torch.Tensor:
        """Feed each active row its newest token; next-token logits [rows, vocab]."""
        ...

    def keep(self, rows: list[int]) -> None:
        """Keep only these batch positions (KV cache, mask and steering rows)."""
        ...


_YOU = re.compile(r"you(?:r|rs|rself|rselves|'re|'ve|'ll|'d)?")


class DecodeLoop:
    """Base of the real backends: chat prompts, option tries and `generate_batch`.

    Subclasses set `cfg`, `tokenizer`, `traits`, `vocab_size` and call `_init_decoding()`,
    then implement `_open(requests, prompts, alphas) -> (logits [B, V], Stepper, prefix state)`.
    """

    cfg: Any
    tokenizer: Any
    traits: list[str]
    vocab_size: int
    # True when `_open` honours `request.placebo_seed` (steering on placebo directions).
    supports_placebo: bool = False

    def _init_decoding(self) -> None:
        tok = self.tokenizer
        self._stop_ids = {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>"))
                          if isinstance(i, int) and i >= 0}
        self._pad_id = pad_id(tok)
        self._newline: dict[int, bool] = {}
        self._tries: dict[tuple[str, ...], OptionTrie] = {}
        self._prompt_cache: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self._prefix_ids: dict[str, list[int]] = {}
        self._you_mask: torch.Tensor | None = None

    def _open(self, requests: list[GenerationRequest], prompts: list[list[int]],
              alphas: torch.Tensor) -> tuple[torch.Tensor, Stepper, list[str]]:
        raise NotImplementedError

    def _second_person(self) -> torch.Tensor:
        """Vocabulary mask of second-person words ("you", " Your", "yourself", ...), built once:
        a Work line says what the agent does, and "you" there is the assistant talking."""
        if self._you_mask is None:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            for tid in range(min(self.vocab_size, len(self.tokenizer))):
                if _YOU.fullmatch(self.tokenizer.decode([tid]).strip().lower()):
                    mask[tid] = True
            self._you_mask = mask
        return self._you_mask

    def _close(self) -> None:
        """Called after every batch, also on errors (e.g. switch steering off)."""

    # ----- prompts -----
    def prompt_ids(self, system: str, user: str) -> list[int]:
        """Chat-template token ids (system + user + assistant header), LRU-cached."""
        key = (system, user)
        ids = self._prompt_cache.get(key)
        if ids is None:
            ids = self._prompt_cache[key] = chat_ids(self.tokenizer, system, user)
            if len(self._prompt_cache) > 4096:
                self._prompt_cache.popitem(last=False)
        return ids

    def prefix_ids(self, system: str) -> list[int]:
        """Token ids of the chat-template system block (the reusable prefix)."""
        ids = self._prefix_ids.get(system)
        if ids is None:
            ids = self._prefix_ids[system] = chat_ids(self.tokenizer, system)
        return ids

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_ids(request.system, request.user))

    def alphas_for(self, steerings: Sequence[dict[str, float]]) -> torch.Tensor:
        """[B, T] alphas from per-row trait dicts (missing traits = 0)."""
        return torch.tensor([[float(s.get(t, 0.0)) for t in self.traits] for s in steerings],
                            dtype=torch.float32)

    # ----- generation -----
    def _has_newline(self, tok_id: int) -> bool:
        v = self._newline.get(tok_id)
        if v is None:
            v = self._newline[tok_id] = "\n" in self.tokenizer.decode([tok_id])
        return v

    def _trie(self, options: tuple[str, ...]) -> OptionTrie | None:
        """The (cached) option trie of a request; None when unconstrained."""
        if not options:
            return None
        trie = self._tries.get(options)
        if trie is None:
            if len(self._tries) > 4096:
                self._tries.clear()
            trie = self._tries[options] = OptionTrie(options, self.tokenizer, self.vocab_size)
        return trie

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.no_grad()
    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate all rows together; each row's tokens equal its single-row output."""
        if not requests:
            return []
        inf = self.cfg.inference
        prompts = [self.prompt_ids(r.system, r.user) for r in requests]
        # The engine already routed each agent's dose by steering mode (steering.modes):
        # add what the request says. Placebo rows need a backend that builds that basis.
        if not self.supports_placebo and any(r.placebo_seed is not None for r in requests):
            raise NotImplementedError(f"{type(self).__name__} cannot steer on placebo "
                                      "directions (steering.mode=placebo)")
        alphas = self.alphas_for([r.steering for r in requests])
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
        option_lp: list[float | None] = [0.0 if t is not None else None for t in tries]
        seen = torch.zeros(len(requests), self.vocab_size, dtype=torch.bool)
        if inf.penalize_prompt_tokens:  # in free text only (see InferenceConfig)
            for i, p in enumerate(prompts):
                seen[i, p] = True
        stop_reason = ["length"] * len(requests)
        active = list(range(len(requests)))  # batch position -> request index
        t0 = time.perf_counter()
        try:
            logits, stepper, prefix_state = self._open(requests, prompts, alphas)
            while True:
                last = logits.float().cpu()
                raw = last  # before penalty/temperature: what decision replay re-scores
                # No penalty while an option is being chosen: the choice is the model's
                # (and the steering's), not a side effect of which words the prompt used.
                free = torch.tensor([nodes[i] is None for i in active])
                last = apply_repetition_penalty(last, seen[torch.tensor(active)] & free[:, None],
                                                inf.repetition_penalty)
                for b, i in enumerate(active):
                    if nodes[i] is not None:
                        last[b] = last[b].masked_fill(~tries[i].allowed(nodes[i]), float("-inf"))
                    elif inf.first_person_work and chosen_option[i].startswith("Work"):
                        last[b] = last[b].masked_fill(self._second_person(), float("-inf"))
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
                    stepper.keep(keep)
                    active = [active[b] for b in keep]
                logits = stepper.step(new_tokens)
        finally:
            self._close()
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
