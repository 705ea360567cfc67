"""Per-row activation steering: forward hooks that add `alphas[B, T] @ V[T, H]`.

One hook per configured decoder layer ("layer L" = output of `model.model.layers[L-1]`
= `hidden_states[L]`). Each hook adds, to every position of row b, the vector
`sum_t alphas[b, t] * V_L[t]` where `V_L[t]` is trait t's calibrated direction at that
layer (unit direction x per-layer scale). All positions are steered, prompt and
generated alike: the prompt's KV cache then carries the steering, so later tokens see a
consistently steered context (steering only new tokens would let the unsteered prompt
keys/values dilute the effect, and would make a cached prompt prefix differ from a
fresh one). Left padding is harmless: padded positions are masked out as keys.

The hook is O(B x H) per layer per step (one tiny matmul, precomputed once per batch),
and skipped entirely when all alphas are zero, so an unsteered row is bit-identical to
the unhooked model.

Bases: the trait vectors are the default basis (key None). Other bases with the same
shape (the placebo's random directions, see steering.modes) are added under a key, and
each row may name its basis, so a batch can mix trait-steered and placebo rows.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager

import torch

from steertown.residual import add_hook, decoder_layers


class SteeringHooks:
    """Installed once; `set_alphas` (or the `steered` context) chooses per-row steering.

    `directions[layer]` is a float32 tensor [T, H] of calibrated steering vectors for the
    traits in `traits` order. Steering per batch row is given as alphas [B, T].
    """

    def __init__(self, model: torch.nn.Module, layers: list[int],
                 directions: dict[int, torch.Tensor], traits: Sequence[str]) -> None:
        self.model = model
        self.layers = list(layers)
        self.traits = list(traits)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._deltas: dict[int, torch.Tensor | None] = {layer: None for layer in self.layers}
        blocks = decoder_layers(model)
        param = next(model.parameters())
        self._devices = {}
        for layer in self.layers:
            if not 1 <= layer <= len(blocks):
                raise ValueError(f"layer {layer} out of range 1..{len(blocks)}")
            block = blocks[layer - 1]
            # Keep V on the block's own device (device_map may spread layers).
            self._devices[layer] = next(block.parameters(), param).device
            self._handles.append(add_hook(model, layer, lambda layer=layer: self._deltas[layer]))
        self._bases: dict[Hashable, dict[int, torch.Tensor]] = {}
        self.add_basis(None, directions)

    def add_basis(self, key: Hashable, directions: dict[int, torch.Tensor]) -> None:
        """Register per-layer [T, H] directions under `key` (None = the trait vectors)."""
        self._bases[key] = {layer: directions[layer].to(device=self._devices[layer],
                                                        dtype=torch.float32)
                            for layer in self.layers}

    def has_basis(self, key: Hashable) -> bool:
        return key in self._bases

    def basis(self, key: Hashable = None) -> dict[int, torch.Tensor]:
        """The per-layer [T, H] directions of a basis (None = the trait vectors)."""
        return self._bases[key]

    def set_alphas(self, alphas: torch.Tensor | None,
                   bases: Sequence[Hashable] | None = None) -> None:
        """Per-row steering for the next forward passes: alphas [B, T] or None (off).

        `bases[b]` names row b's basis (None or omitted = the trait vectors).
        """
        if alphas is None or not torch.any(alphas != 0):
            self._deltas = {layer: None for layer in self.layers}
            return
        if alphas.dim() != 2 or alphas.shape[1] != len(self.traits):
            raise ValueError(f"alphas must be [batch, {len(self.traits)}], got {tuple(alphas.shape)}")
        a = alphas.to(torch.float32)
        keys = [None] * a.shape[0] if bases is None else list(bases)
        if len(keys) != a.shape[0]:
            raise ValueError(f"{len(keys)} bases for {a.shape[0]} rows of alphas")
        # Precompute the per-row deltas once per batch: the hook itself is one add.
        deltas = {}
        for layer in self.layers:
            if all(k is None for k in keys):
                v = self._bases[None][layer]
                deltas[layer] = a.to(v.device) @ v
                continue
            d = None
            for key in dict.fromkeys(keys):
                v = self._bases[key][layer]
                rows = torch.tensor([i for i, k in enumerate(keys) if k == key])
                if d is None:
                    d = torch.zeros(a.shape[0], v.shape[1], device=v.device)
                d[rows.to(v.device)] = a[rows].to(v.device) @ v
            deltas[layer] = d
        self._deltas = deltas

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only the given rows' deltas (the decode loop drops finished rows)."""
        self._deltas = {layer: (None if d is None else d[index.to(d.device)])
                        for layer, d in self._deltas.items()}

    @contextmanager
    def steered(self, alphas: torch.Tensor | None,
                bases: Sequence[Hashable] | None = None) -> Iterator[None]:
        """Run forward passes inside with the given per-row alphas; off afterwards."""
        self.set_alphas(alphas, bases)
        try:
            yield
        finally:
            self.set_alphas(None)

    def remove(self) -> None:
        """Uninstall the hooks (the model is then plain again)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.set_alphas(None)
