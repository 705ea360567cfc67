"""ONNX Runtime backend: the same decode loop, the model passes on a compiled CPU graph.

`model.backend: onnx`. The graph comes from onnx_export (the builder's fused fp32 graph
of the same cached weights, plus one `steer_L<k>` input per configured layer). Each row
gets its own `alpha @ V_L` through those inputs, so steering is per row exactly as in the
torch hooks; sampling, option tries, adaptive caps and stops are `DecodeLoop`'s, shared
with the torch backend.

Padding: rows are RIGHT-padded. The graph's GroupQueryAttention takes each row's length
from the attention mask's row sum, applies rotary positions from 0 and writes a decode
step's keys right after the row's real tokens, so pad slots are never attended to and
are overwritten. (ONNX Runtime GenAI's own loop failed on left padding, and the model's
pad id 2 is <|im_end|>; here the pad id only ever sits at masked slots.)

The torch model is loaded too, as `reference`: it computes or loads the trait vectors,
provides the tokenizer, and runs the verification passes that read or patch the
residual stream (`hidden_at`, `steered`, readouts). Generation never touches it.

The steered prefix KV cache works as in the torch backend. The graph's attention
(GroupQueryAttention) refuses a multi-token input on top of a cache for more than one
row, so the rest of each prompt is prefilled on a second graph with the same weights
whose attention is written in standard ops (onnx_rest_graph): all rows in one pass, each
row's keys laid out as GroupQueryAttention lays them out, so decoding continues on the
GQA graph. `batched_rest = False` prefills row by row on the GQA graph instead.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steertown.config import RunConfig
from steertown.inference.backend import GenerationRequest
from steertown.inference.decode_loop import DecodeLoop
from steertown.inference.onnx_bound import BoundStepper
from steertown.inference.onnx_export import ensure_onnx_model
from steertown.inference.onnx_rest_graph import ensure_rest_graph, rest_feeds
from steertown.inference.prefix_cache import PrefixKVCache
from steertown.inference.transformers_backend import TransformersBackend
from steertown.residual import right_pad


class _OrtStepper:
    """Decode steps on the ONNX session: KV cache as arrays, one row per active request."""

    def __init__(self, backend: OnnxBackend, present: list[np.ndarray], lengths: np.ndarray,
                 steer: dict[str, np.ndarray]) -> None:
        self.b, self.present, self.lengths, self.steer = backend, present, lengths, steer

    def keep(self, rows: list[int]) -> None:
        idx = np.asarray(rows)
        self.present = [p[idx] for p in self.present]
        self.lengths = self.lengths[idx]
        self.steer = {k: v[idx] for k, v in self.steer.items()}

    def step(self, tokens: list[int]) -> torch.Tensor:
        n, past = len(tokens), self.present[0].shape[2]
        # Row sums give each row's length (real tokens + this one); the layout of the
        # ones does not matter to GroupQueryAttention, only the sum and the width.
        mask = (np.arange(past + 1)[None, :] <= self.lengths[:, None]).astype(np.int64)
        feeds = {"input_ids": np.asarray(tokens, dtype=np.int64)[:, None],
                 "attention_mask": mask, "logits_index": np.zeros((n, 1, 1), np.int64),
                 **self.steer, **dict(zip(self.b.past_names, self.present, strict=True))}
        out = self.b.session.run(self.b.fetch, feeds)
        self.present = out[1:]
        self.lengths = self.lengths + 1
        return torch.from_numpy(out[0][:, 0, :])


class OnnxBackend(DecodeLoop):
    """Backend protocol on an ONNX Runtime session; torch reference for vectors/verification."""

    name = "onnx"
    supports_placebo = True  # steer_inputs uses each row's basis (steering.mode=placebo)
    # The rest of each prompt (after the cached prefix) prefilled in one batched pass on the
    # standard-op attention graph (onnx_rest_graph) instead of one row at a time on the GQA
    # graph. Exact (same tokens) but not faster on 2 cores (bench/RESULTS.md, onnx-levers:
    # action tick 0.95x, reflection tick 0.88x), so off; kept for the bench A/B.
    batched_rest = False
    # Decode steps on preallocated KV buffers bound as both past and present (onnx_bound):
    # no copy of the cache per step. Bitwise the same logits; 1.08x action tick, 1.16x
    # reflection tick (bench/RESULTS.md, onnx-levers). False = `session.run` with arrays.
    bound_decode = True

    def __init__(self, cfg: RunConfig, reference: TransformersBackend | None = None) -> None:
        import onnxruntime as ort

        self.cfg = cfg
        # The graph is float32, so its reference (vectors, verification) is too.
        ref_cfg = replace(cfg, model=replace(cfg.model, dtype="float32")) \
            if cfg.model.dtype == "auto" else cfg
        self.reference = reference or TransformersBackend(ref_cfg)
        ref = self.reference
        source = Path(ref.loaded.source)
        if not source.is_dir():
            raise ValueError(f"model.backend=onnx: {ref.loaded.source} is not a local model "
                             "directory (the ONNX graph is built from one)")
        if not str(ref.device).startswith("cpu"):
            raise ValueError("model.backend=onnx runs on CPU only; use model.device=cpu "
                             "or model.backend=torch on a GPU")
        self.model, self.tokenizer, self.vectors = ref.model, ref.tokenizer, ref.vectors
        self.layers, self.traits, self.device = list(ref.layers), list(ref.traits), ref.device
        self.loaded = ref.loaded
        t0 = time.perf_counter()
        try:
            self.onnx_dir, self.onnx_from_cache = ensure_onnx_model(source, self.layers)
        except RuntimeError as e:  # auto picked onnx: say how to run without it
            raise RuntimeError(f"{e}; set model.backend=torch to run without ONNX") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(0, int(cfg.model.num_threads))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.onnx_dir / "model.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        self._session_options = opts
        self._rest_session = None  # the batched rest-prefill graph, loaded on first use
        self.session_seconds = round(time.perf_counter() - t0, 2)
        names = [i.name for i in self.session.get_inputs()]
        self.past_names = [n for n in names if n.startswith("past_key_values.")]
        # Outputs fetched by name, in the order of the matching past inputs.
        self.fetch = ["logits"] + [n.replace("past_key_values.", "present.") for n in self.past_names]
        kv = next(i for i in self.session.get_inputs() if i.name == self.past_names[0])
        self._kv_heads, self._head_dim = int(kv.shape[1]), int(ref.model.config.head_dim)
        mc = ref.model.config
        self._max_position = int(mc.max_position_embeddings)
        self._group = int(mc.num_attention_heads) // int(mc.num_key_value_heads)
        self._dirs = {k: ref.vectors.steering_matrix(k).float().numpy() for k in self.layers}
        self.vocab_size = ref.vocab_size
        self.prefix_kv = PrefixKVCache()
        self._init_decoding()

    # Verification reads and patches the residual stream on the torch reference.
    def steered(self, alphas: Any, placebo_seeds: Any = None):
        return self.reference.steered(alphas, placebo_seeds)

    def hidden_at(self, *args: Any, **kwargs: Any):
        return self.reference.hidden_at(*args, **kwargs)

    def reply_logprobs(self, *args: Any, **kwargs: Any):
        return self.reference.reply_logprobs(*args, **kwargs)

    @property
    def hooks(self):
        return self.reference.hooks

    def steer_inputs(self, alphas: torch.Tensor,
                     placebo_seeds: list[int | None] | None = None) -> dict[str, np.ndarray]:
        """`steer_L<k>` feeds: each row's alpha @ V_k, [B, 1, H] float32 (V_k = the trait
        vectors, or the row's placebo directions when it has a placebo seed)."""
        a = alphas.to(torch.float32).numpy()
        seeds = placebo_seeds or [None] * len(a)
        if all(s is None for s in seeds):
            return {f"steer_L{k}": (a @ v)[:, None, :].astype(np.float32)
                    for k, v in self._dirs.items()}
        out = {}
        for k, v in self._dirs.items():
            d = np.zeros((len(a), v.shape[1]), np.float32)
            for seed in dict.fromkeys(seeds):
                rows = [i for i, s in enumerate(seeds) if s == seed]
                basis = v if seed is None else \
                    self.vectors.placebo_matrix(k, seed).float().numpy()
                d[rows] = a[rows] @ basis
            out[f"steer_L{k}"] = d[:, None, :]
        return out

    def _run(self, ids: np.ndarray, mask: np.ndarray, last: np.ndarray,
             steer: dict[str, np.ndarray], past: list[np.ndarray] | None) -> list[np.ndarray]:
        """One session pass: logits at `last` [B] and the per-layer KV (present)."""
        if past is None:
            empty = np.zeros((len(ids), self._kv_heads, 0, self._head_dim), np.float32)
            past = [empty] * len(self.past_names)
        feeds = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
                 "logits_index": last.astype(np.int64)[:, None, None], **steer,
                 **dict(zip(self.past_names, past, strict=True))}
        return self.session.run(self.fetch, feeds)

    def _open(self, requests: list[GenerationRequest], prompts: list[list[int]],
              alphas: torch.Tensor) -> tuple[torch.Tensor, _OrtStepper, list[str]]:
        steer = self.steer_inputs(alphas, [r.placebo_seed for r in requests])
        lengths = np.asarray([len(p) for p in prompts], dtype=np.int64)
        # Room for the longest prompt plus the largest token budget (bound decode).
        capacity = int(lengths.max()) + max(int(r.max_new_tokens) for r in requests) + 1

        def stepper(present: list[np.ndarray]):
            if self.bound_decode:
                return BoundStepper(self, present, lengths, steer, capacity)
            return _OrtStepper(self, present, lengths, steer)

        if self.cfg.optimization.prefix_cache:
            done = self._open_two_phase(requests, prompts, alphas, steer)
            if done is not None:
                logits, present, state = done
                return logits, stepper(present), state
        ids, mask = right_pad(prompts, self._pad_id)
        out = self._run(ids.numpy(), mask.numpy(), lengths - 1, steer, None)
        return torch.from_numpy(out[0][:, 0, :]), stepper(out[1:]), ["off"] * len(prompts)

    def _open_two_phase(self, requests: list[GenerationRequest], prompts: list[list[int]],
                        alphas: torch.Tensor, steer: dict[str, np.ndarray]):
        """Prefix KV from the cache (misses computed row by row), then each row's rest:
        in one pass on the rest graph (`batched_rest`), or row by row on the GQA graph
        (still many tokens per pass) with the rows' caches right-padded into one batch."""
        pre = [self.prefix_ids(r.system) for r in requests]
        if any(len(p) >= len(q) or q[:len(p)] != p for p, q in zip(pre, prompts, strict=True)):
            return None  # template does not split cleanly: single-phase prefill
        # The basis is part of the key: equal alphas on placebo directions are another prefix.
        keys = [(*PrefixKVCache.key(p, alphas[i]), requests[i].placebo_seed)
                for i, p in enumerate(pre)]
        kvs, state, todo = self.prefix_kv.lookup(keys)
        # Misses one row at a time, as in the torch backend: a prefix's KV must not depend
        # on its batch of misses (a resumed run starts with every prefix a miss).
        fresh = {}
        for i in todo:
            n = len(pre[i])
            out = self._run(np.asarray([pre[i]]), np.ones((1, n)), np.asarray([n - 1]),
                            {k: v[i:i + 1] for k, v in steer.items()}, None)
            arrs = [torch.from_numpy(np.ascontiguousarray(p[0, :, :n])) for p in out[1:]]
            fresh[keys[i]] = list(zip(arrs[0::2], arrs[1::2], strict=True))  # stored as pairs
            self.prefix_kv.put(keys[i], fresh[keys[i]])
        kvs = [kv if kv is not None else fresh[keys[i]] for i, kv in enumerate(kvs)]
        if self.batched_rest:
            logits, present = self._rest_batched(pre, prompts, kvs, steer)
            return logits, present, state
        logits, rows = [], []
        for i, (p, q) in enumerate(zip(pre, prompts, strict=True)):
            rest = np.asarray([q[len(p):]])
            out = self._run(rest, np.ones((1, len(q))), np.asarray([rest.shape[1] - 1]),
                            {k: v[i:i + 1] for k, v in steer.items()},
                            [t.numpy()[None] for pair in kvs[i] for t in pair])
            logits.append(out[0][0, 0])
            rows.append(out[1:])
        width = max(len(q) for q in prompts)
        present = []
        for layer in range(len(self.past_names)):
            buf = np.zeros((len(prompts), self._kv_heads, width, self._head_dim), np.float32)
            for i, q in enumerate(prompts):
                buf[i, :, :len(q)] = rows[i][layer][0, :, :len(q)]
            present.append(buf)
        return torch.from_numpy(np.stack(logits)), present, state

    @property
    def rest_session(self):
        """The session of the batched rest-prefill graph (built and loaded on first use)."""
        if self._rest_session is None:
            import onnxruntime as ort

            self._rest_session = ort.InferenceSession(
                str(ensure_rest_graph(self.onnx_dir)), self._session_options,
                providers=["CPUExecutionProvider"])
        return self._rest_session

    def _rest_batched(self, pre: list[list[int]], prompts: list[list[int]], kvs: list,
                      steer: dict[str, np.ndarray]) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Every row's rest of prompt in one pass on top of its prefix KV (rest graph)."""
        n_pre = [len(p) for p in pre]
        n_rest = [len(q) - len(p) for p, q in zip(pre, prompts, strict=True)]
        width, rest = max(n_pre), max(n_rest)
        past = []
        for layer in range(len(kvs[0])):
            for half in (0, 1):  # keys, values
                buf = np.zeros((len(pre), self._kv_heads, width, self._head_dim), np.float32)
                for i, kv in enumerate(kvs):
                    buf[i, :, :n_pre[i]] = kv[layer][half].numpy()
                past.append(buf)
        ids = np.full((len(pre), rest), self._pad_id, np.int64)
        for i, (p, q) in enumerate(zip(pre, prompts, strict=True)):
            ids[i, :n_rest[i]] = q[len(p):]
        feeds = {"input_ids": ids, "attention_mask": np.ones((len(pre), width + rest), np.int64),
                 "logits_index": (np.asarray(n_rest, np.int64) - 1)[:, None, None], **steer,
                 **dict(zip(self.past_names, past, strict=True)),
                 **rest_feeds(n_pre, n_rest, self._max_position, self._group)}
        out = self.rest_session.run(self.fetch, feeds)
        return torch.from_numpy(out[0][:, 0, :]), out[1:]

    def describe(self) -> dict[str, Any]:
        """The torch reference's description, with what differs on this runtime."""
        import onnxruntime as ort

        d = self.reference.describe()
        d.update({
            "backend": self.name, "runtime": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
            "dtype": "float32", "dtype_reason": "the ONNX graph is float32",
            "onnx_dir": str(self.onnx_dir),
            "onnx_from_cache": self.onnx_from_cache, "session_seconds": self.session_seconds,
            "reference": f"torch {d.get('dtype')} (vectors, verification passes)",
            "prefix_cache": ("two-phase prefill, per-agent steered prefix KV reused (rest of "
                             "each prompt prefilled " + ("in one batched pass, standard-op "
                             "attention graph)" if self.batched_rest else "row by row)")
                             if self.cfg.optimization.prefix_cache else "off"),
            "decode": ("bound KV buffers (IOBinding, no copy per step)" if self.bound_decode
                       else "session.run with the KV cache as arrays"),
            "batch_exactness": "measured per run by verify (mechanistic.batch); see tests/test_onnx_backend.py",
        })
        return d
