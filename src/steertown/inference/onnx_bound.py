"""Decode steps on preallocated KV buffers (ONNX Runtime IOBinding), without a copy per step.

With plain `session.run`, every decode step hands ONNX Runtime the whole KV cache as
inputs and gets a new, one-token-longer cache back: GroupQueryAttention copies the past
into a fresh present buffer each step (for 16 rows of 300 tokens, about 220 MB per step
on SmolLM2-135M). Here each layer's keys and values live in one buffer per batch with
room for the longest row's prompt plus its token budget, bound as both the past input
and the present output. GroupQueryAttention then shares the buffer (it writes the new
token's keys at each row's length and attends over the row's own positions), so a step
copies nothing. Rows leaving the batch are dropped by copying the kept rows once.

The attention sums run over the same positions in the same order as with separate
buffers; whether the tokens are the same is measured (bench/onnx_levers.py, tests).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class BoundStepper:
    """`Stepper` (decode_loop) over shared past/present buffers of width `capacity`."""

    def __init__(self, backend: Any, present: list[np.ndarray], lengths: np.ndarray,
                 steer: dict[str, np.ndarray], capacity: int) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.b, self.lengths, self.steer = backend, lengths, steer
        width = present[0].shape[2]
        self.capacity = max(capacity, width + 1)
        self.kv = []
        for p in present:  # one copy of the prefill cache into the roomy buffers
            buf = np.zeros((*p.shape[:2], self.capacity, p.shape[3]), np.float32)
            buf[:, :, :width] = p
            self.kv.append(buf)
        self._bind_cache()

    def _bind_cache(self) -> None:
        """Bind every layer's buffer as its past input and its present output (same memory)."""
        self.io = self.b.session.io_binding()
        self.io.bind_output("logits")  # first: get_outputs()[0]
        self._values = [self._ort.OrtValue.ortvalue_from_numpy(a) for a in self.kv]
        for past, present, value in zip(self.b.past_names, self.b.fetch[1:], self._values,
                                        strict=True):
            self.io.bind_ortvalue_input(past, value)
            self.io.bind_ortvalue_output(present, value)

    def keep(self, rows: list[int]) -> None:
        idx = np.asarray(rows)
        self.kv = [a[idx] for a in self.kv]
        self.lengths = self.lengths[idx]
        self.steer = {k: v[idx] for k, v in self.steer.items()}
        self._bind_cache()

    def step(self, tokens: list[int]) -> torch.Tensor:
        n = len(tokens)
        if int(self.lengths.max()) + 1 > self.capacity:
            raise RuntimeError("BoundStepper: a row outgrew its KV buffer (capacity too small)")
        # Mask width = the longest row after this token (GroupQueryAttention's total
        # length); row sums give each row's own length, as in the unbound stepper.
        width = int(self.lengths.max()) + 1
        mask = (np.arange(width)[None, :] <= self.lengths[:, None]).astype(np.int64)
        feeds = {"input_ids": np.asarray(tokens, dtype=np.int64)[:, None],
                 "attention_mask": mask, "logits_index": np.zeros((n, 1, 1), np.int64),
                 **self.steer}
        for name, value in feeds.items():
            self.io.bind_cpu_input(name, np.ascontiguousarray(value))
        self.b.session.run_with_iobinding(self.io)
        logits = np.array(self.io.get_outputs()[0].numpy())  # ORT may reuse its memory
        self.lengths = self.lengths + 1
        return torch.from_numpy(logits[:, 0, :])
