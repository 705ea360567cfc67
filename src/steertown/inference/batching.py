"""Run a tick's requests through a backend in length-bucketed batches.

Rows are sorted by prompt length so each batch pads little, then split into batches of
at most `batch_size`. On out-of-memory a batch is halved and retried, down to one row.
Results come back in the order of the requests.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from steertown.inference.backend import Backend, GenerationRequest, GenerationResult

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    batches: int = 0
    seconds: float = 0.0
    oom_splits: int = 0


def _is_oom(e: BaseException) -> bool:
    name = type(e).__name__
    return name == "OutOfMemoryError" or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def _empty_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def generate_all(backend: Backend, requests: list[GenerationRequest], batch_size: int,
                 stats: BatchStats | None = None) -> list[GenerationResult]:
    """Generate every request; batched, length-sorted, OOM-resilient."""
    stats = stats or BatchStats()
    if not requests:
        return []
    lengths = {r.request_id: backend.count_prompt_tokens(r) for r in requests}
    order = sorted(requests, key=lambda r: (lengths[r.request_id], r.request_id))
    out: dict[str, GenerationResult] = {}
    pending = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    t0 = time.perf_counter()
    while pending:
        batch = pending.pop(0)
        try:
            results = backend.generate_batch(batch)
        except Exception as e:
            if not _is_oom(e) or len(batch) == 1:
                raise
            _empty_cache()
            half = len(batch) // 2
            log.warning("out of memory on a batch of %d rows: retrying as %d + %d",
                        len(batch), half, len(batch) - half)
            stats.oom_splits += 1
            pending[:0] = [batch[:half], batch[half:]]
            continue
        stats.batches += 1
        for r in results:
            out[r.request_id] = r
    stats.seconds += time.perf_counter() - t0
    return [out[r.request_id] for r in requests]
