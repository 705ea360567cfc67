"""The residual stream's plumbing, in one place: chat-template ids, padding, layer access.

Everything that pushes token ids through a decoder model or reads/changes a decoder
block's output goes through here, so there is one pad id, one padding rule per side,
one notion of "layer L" and one way to hook it:

- "Layer L" is the output of decoder block L-1 (`model.model.layers[L-1]`), which is
  `hidden_states[L]`: steering adds there and readouts read there.
- Left padding (the torch backend, readouts, vectors): real tokens end at the right
  edge, so the last position of every row is its newest token; position ids count real
  tokens only, so a padded row sees exactly the positions it would see alone.
- Right padding (ONNX Runtime's GroupQueryAttention, which derives each row's length
  from the mask's row sums and writes new keys right after the real ones).
- The pad id is the tokenizer's pad id (the loader sets it to EOS when the model has
  none). It only ever sits at masked positions, so its value cannot change a result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def pad_id(tokenizer: Any) -> int:
    """The one pad id: the tokenizer's (EOS when it had none, see model_loading), else 0."""
    pid = getattr(tokenizer, "pad_token_id", None)
    return int(pid) if pid is not None else 0


def chat_ids(tokenizer: Any, system: str, user: str | None = None) -> list[int]:
    """Chat-template token ids: system + user + assistant header; `user=None` = system block only.

    The system block alone is the reusable prefix of every prompt with that system text.
    """
    msgs = [{"role": "system", "content": system}]
    if user is not None:
        msgs.append({"role": "user", "content": user})
    out = tokenizer.apply_chat_template(msgs, add_generation_prompt=user is not None, tokenize=True)
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


def left_pad(seqs: Sequence[Sequence[int]], pad: int, device: Any = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, position ids) [B, W] with rows right-aligned."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def right_pad(seqs: Sequence[Sequence[int]], pad: int, device: Any = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) [B, W] with rows left-aligned (positions are implicit)."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([list(s) + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    return ids, mask


def decoder_layers(model: torch.nn.Module) -> Sequence[torch.nn.Module]:
    """The model's decoder blocks (Llama-style `model.model.layers`, GPT-2 `transformer.h`)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers"):
        return inner.layers
    tr = getattr(model, "transformer", None)
    if tr is not None and hasattr(tr, "h"):
        return tr.h
    raise ValueError(f"cannot find decoder layers on {type(model).__name__}")


def block_hidden(output: Any) -> torch.Tensor:
    """The hidden states in a decoder block's output (a tensor, or a tuple's first item)."""
    return output[0] if isinstance(output, tuple) else output


def with_block_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """A decoder block's output with its hidden states replaced (same structure)."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def add_hook(model: torch.nn.Module, layer: int,
             delta: Callable[[], torch.Tensor | None]) -> torch.utils.hooks.RemovableHandle:
    """Add `delta()` ([B, H], per row, all positions) to layer `layer`'s output on every pass.

    `delta()` returning None leaves the output untouched (bit-identical to no hook).
    """
    def hook(_module, _args, output):
        d = delta()
        if d is None:
            return None
        hidden = block_hidden(output)
        if hidden.shape[0] != d.shape[0]:
            raise RuntimeError(f"steering set for {d.shape[0]} rows but layer {layer} saw a batch "
                               f"of {hidden.shape[0]}; set the steering for the current batch")
        return with_block_hidden(output, hidden + d.to(hidden.device, hidden.dtype)[:, None, :])
    return decoder_layers(model)[layer - 1].register_forward_hook(hook)


@contextmanager
def added(model: torch.nn.Module, deltas: dict[int, torch.Tensor] | None) -> Iterator[None]:
    """Temporarily add `deltas[layer]` ([B, H], per row) to the output of each layer."""
    handles = [add_hook(model, layer, lambda d=d: d) for layer, d in (deltas or {}).items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class StopForward(Exception):
    """Raised by a capture after its deepest layer: the rest of the pass is wasted work."""


@contextmanager
def captured(model: torch.nn.Module, layers: Sequence[int], *, stop: bool = False,
             before_steering: bool = False) -> Iterator[dict[int, torch.Tensor]]:
    """Record each layer's output (float32) into the yielded dict on every forward pass.

    `stop=True` aborts the pass after the deepest layer (run it with `forward_until`).
    Captures see the output after steering unless `before_steering` (the hook is then
    put ahead of the steering hooks).
    """
    got: dict[int, torch.Tensor] = {}
    deepest = max(layers)
    blocks = decoder_layers(model)

    def make(layer: int):
        def hook(_m, _a, out):
            got[layer] = block_hidden(out).float()
            if stop and layer == deepest:
                raise StopForward
        return hook

    handles = [blocks[layer - 1].register_forward_hook(make(layer), prepend=before_steering)
               for layer in layers]
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


def forward_until(fn: Callable[[], Any]) -> None:
    """Run a forward pass that a `captured(..., stop=True)` may cut short."""
    try:
        fn()
    except StopForward:
        pass
