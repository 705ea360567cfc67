"""Contrastive activation addition (CAA) trait vectors: compute, calibrate, cache.

A trait's raw direction at layer L is the mean over train pairs of
`mean_tokens(h_L(high persona prompt)) - mean_tokens(h_L(low persona prompt))`, where
h_L is the output of decoder layer L (the point the hooks add to) and the token mean
covers every prompt token except the first (an attention-sink outlier with a norm
~150x the others). Prompts are the chat template (system persona + user message +
generation prompt).

Calibration: the steering vector for alpha = 1 is the unit direction times
`CALIBRATION_K x median token norm at L` (0.15 x median; see docs/steering.md), split
evenly across the configured layers. Cached as safetensors (one float32 tensor per
"<trait>.<layer>", raw direction) plus a JSON sidecar; keyed by model id, dtype, layers
and the train-data hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from steertown.residual import captured, chat_ids, forward_until, left_pad, pad_id
from steertown.steering.contrast_data import ContrastData, ContrastPair

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CALIBRATION_K = 0.15  # alpha = 1 adds 0.15 x the median residual norm (= 4 DESIGN units)
TOKEN_POSITION = "mean over all chat-template prompt tokens except the first (attention sink)"


class VectorFileError(ValueError):
    """A cached vector file is unreadable or incomplete; the message names the file."""


@dataclass
class TraitVectors:
    """Raw CAA directions per (trait, layer) plus the per-layer calibrated scale."""

    traits: list[str]
    layers: list[int]
    tensors: dict[tuple[str, int], torch.Tensor]  # raw mean difference, float32 [H]
    unit: dict[int, float]  # |steering vector| at alpha = 1, per layer (before layer split)
    meta: dict[str, Any] = field(default_factory=dict)

    def direction(self, trait: str, layer: int) -> torch.Tensor:
        """Unit-norm direction of `trait` at `layer`."""
        v = self.tensors[(trait, layer)]
        return v / v.norm()

    def steering_matrix(self, layer: int) -> torch.Tensor:
        """[T, H] vectors added at `layer` per unit alpha (traits in `self.traits` order).

        With several layers the magnitude is split evenly, so alpha = 1 injects about the
        same total as one layer does (stacking full-size vectors at 3 layers over-steers).
        """
        scale = self.unit[layer] / len(self.layers)
        return torch.stack([self.direction(t, layer) * scale for t in self.traits])

    def placebo_matrix(self, layer: int, seed: int) -> torch.Tensor:
        """[T, H] seeded random directions, row t with the norm of trait t's steering row.

        The placebo control (steering.mode=placebo): agents' alphas multiply these instead
        of the trait vectors, so the same amount of residual-stream change goes in a
        direction unrelated to the trait. Fixed by the seed: one generator draws every
        layer's matrix in `self.layers` order (independent of torch's global RNG).
        """
        m = self.steering_matrix(layer)
        g = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        for other in self.layers:
            r = torch.randn(m.shape, generator=g, dtype=torch.float32)
            if other == layer:
                break
        return r / r.norm(dim=1, keepdim=True) * m.norm(dim=1, keepdim=True)

    def vector_id(self) -> str:
        return str(self.meta.get("key", "unsaved"))


def placebo_vector_id(vector_id: str, seed: int) -> str:
    """The id a placebo run records: which seed, and which trait vectors gave the norms."""
    return f"placebo-s{seed}-norms-of-{vector_id}"


@torch.no_grad()
def _mean_activations(model: Any, tokenizer: Any, layers: list[int], prompts: list[list[int]],
                      batch_size: int) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per prompt, mean of layer outputs over tokens 1..n-1; also all token norms per layer."""
    device = next(model.parameters()).device
    means: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    norms: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    pad = pad_id(tokenizer)
    with captured(model, layers, stop=True) as got:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            width = max(len(p) for p in chunk)
            ids, mask, pos = left_pad(chunk, pad, device)
            forward_until(lambda ids=ids, mask=mask, pos=pos: model(
                input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False))
            # Keep real tokens except each row's first one (the attention sink).
            keep = mask.clone()
            for r, p in enumerate(chunk):
                keep[r, width - len(p)] = 0
            keep_f = keep.float()[..., None]
            for layer in layers:
                h = got[layer]
                means[layer].append(((h * keep_f).sum(1) / keep_f.sum(1)).cpu())
                norms[layer].append(h.norm(dim=-1)[keep.bool()].cpu())
    return ({layer: torch.cat(m) for layer, m in means.items()},
            {layer: torch.cat(n) for layer, n in norms.items()})


def compute_trait_vectors(model: Any, tokenizer: Any, layers: list[int],
                          pairs: list[ContrastPair], system_template: str = "{persona}",
                          batch_size: int = 16) -> TraitVectors:
    """CAA vectors from `pairs` (train split only: held-out pairs are refused)."""
    if any(p.split != "train" for p in pairs):
        raise ValueError("compute_trait_vectors: held-out pairs must not be used for vectors")
    t0 = time.perf_counter()
    traits = sorted({p.trait for p in pairs}, key="EACON".find)
    prompts = []
    for p in pairs:
        prompts.append(chat_ids(tokenizer, system_template.format(persona=p.high), p.user))
        prompts.append(chat_ids(tokenizer, system_template.format(persona=p.low), p.user))
    means, norms = _mean_activations(model, tokenizer, layers, prompts, batch_size)
    tensors, unit, meta_norms, medians = {}, {}, {}, {}
    for layer in layers:
        diff = means[layer][0::2] - means[layer][1::2]  # one row per pair
        med = float(norms[layer].median())
        medians[str(layer)] = med
        unit[layer] = CALIBRATION_K * med
        for t in traits:
            rows = [i for i, p in enumerate(pairs) if p.trait == t]
            v = diff[rows].mean(0).float().contiguous()
            tensors[(t, layer)] = v
            meta_norms[f"{t}.{layer}"] = float(v.norm())
    meta = {
        "token_position": TOKEN_POSITION,
        "norms": meta_norms,
        "median_token_norm": medians,
        "unit": {str(k): v for k, v in unit.items()},
        "calibration": {"k": CALIBRATION_K,
                        "rule": "unit = k x median token norm at the layer; steering vector = "
                                "alpha x unit x direction / len(layers)"},
        "pairs_per_trait": {t: sum(p.trait == t for p in pairs) for t in traits},
        "compute_seconds": round(time.perf_counter() - t0, 2),
    }
    return TraitVectors(traits, list(layers), tensors, unit, meta)


def cache_key(model_id: str, dtype: str, layers: list[int], data_hash: str) -> str:
    """Vectors depend on the model, its compute dtype, the layers and the train data."""
    blob = json.dumps([model_id, dtype, sorted(layers), data_hash])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_vectors(vectors: TraitVectors, path: Path) -> None:
    """Write `<path>` (safetensors) and `<path>.json` (sidecar) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{t}.{layer}": v.contiguous() for (t, layer), v in vectors.tensors.items()}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"key": vectors.vector_id()})
    side = path.with_name(path.name + ".json")
    side_tmp = side.with_name(side.name + f".tmp{os.getpid()}")
    sidecar = dict(vectors.meta, format_version=FORMAT_VERSION, traits=vectors.traits,
                   layers=vectors.layers, tensor_names=sorted(tensors))
    side_tmp.write_text(json.dumps(sidecar, indent=1, sort_keys=True))
    os.replace(side_tmp, side)  # sidecar first: a tensor file without sidecar is never valid
    os.replace(tmp, path)


def load_vectors(path: Path) -> TraitVectors:
    """Read a vector file + sidecar; VectorFileError (naming the file) if anything is off."""
    side = path.with_name(path.name + ".json")
    try:
        meta = json.loads(side.read_text())
        traits, layers = list(meta["traits"]), [int(x) for x in meta["layers"]]
        raw = load_file(str(path))
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise VectorFileError(f"vector file {path.name} is unreadable: {e}") from e
    tensors = {}
    for t in traits:
        for layer in layers:
            name = f"{t}.{layer}"
            v = raw.get(name)
            if v is None or v.dim() != 1 or not torch.isfinite(v).all() or v.norm() == 0:
                raise VectorFileError(f"vector file {path.name}: tensor {name} missing or invalid")
            tensors[(t, layer)] = v.float()
    unit = {int(k): float(v) for k, v in meta["unit"].items()}
    return TraitVectors(traits, layers, tensors, unit, meta)


def load_or_compute(model: Any, tokenizer: Any, layers: list[int], data: ContrastData,
                    vectors_dir: str | Path, model_id: str, dtype: str,
                    recompute_corrupt: bool = True) -> TraitVectors:
    """Load cached vectors for (model, dtype, layers, train data) or compute and cache them.

    A corrupt cache file raises VectorFileError when `recompute_corrupt` is False;
    otherwise a warning names the file and the vectors are recomputed and rewritten.
    """
    data_hash = data.train_hash()
    key = cache_key(model_id, dtype, layers, data_hash)
    slug = "".join(c if c.isalnum() else "-" for c in model_id.split("@")[0].split("/")[-1])
    path = Path(vectors_dir) / f"{slug.lower()}-L{'-'.join(map(str, layers))}-{key}.safetensors"
    if path.exists():
        try:
            vec = load_vectors(path)
            if vec.meta.get("key") == key and sorted(vec.layers) == sorted(layers):
                vec.meta["loaded_from"] = str(path)
                return vec
            raise VectorFileError(f"vector file {path.name}: sidecar key does not match")
        except VectorFileError as e:
            if not recompute_corrupt:
                raise
            warnings.warn(f"{e}; recomputing", stacklevel=2)
    vec = compute_trait_vectors(model, tokenizer, layers, data.train_pairs(),
                                data.system_template)
    vec.meta.update(model_id=model_id, dtype=dtype, data_hash=data_hash, key=key,
                    file=path.name)
    save_vectors(vec, path)
    log.info("trait vectors computed in %.1f s -> %s", vec.meta["compute_seconds"], path)
    vec.meta["loaded_from"] = str(path)
    return vec
