"""Steering: contrast data, vector files, hook arithmetic and direction of effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from steertown.config import TRAITS
from steertown.steering.contrast_data import ContrastData, load_contrast_data
from steertown.steering.vectors import (
    TraitVectors,
    VectorFileError,
    compute_trait_vectors,
    load_or_compute,
    load_vectors,
    save_vectors,
)
from tests.model_fixtures import shared_backend


@pytest.fixture(scope="module")
def backend():
    return shared_backend()


def test_contrast_data_splits():
    data = load_contrast_data()
    for t in TRAITS:
        assert len(data.train_pairs(t)) >= 32 and len(data.heldout_pairs(t)) >= 8
        assert len([s for s in data.situations if s.trait == t]) >= 4
        items = [q for q in data.likert if q.trait == t]
        assert len(items) >= 6 and any(q.reverse_keyed for q in items)
    ids = [p.id for p in data.pairs]
    assert len(ids) == len(set(ids))
    assert all(p.high != p.low for p in data.pairs)


def test_train_hash_ignores_heldout():
    data = load_contrast_data()
    fewer = ContrastData(data.system_template, tuple(data.train_pairs()), (), (), {})
    assert fewer.train_hash() == data.train_hash()
    changed = ContrastData(data.system_template + " ", data.pairs, (), (), {})
    assert changed.train_hash() != data.train_hash()


def _toy_vectors(key: str = "toy") -> TraitVectors:
    g = torch.Generator().manual_seed(0)
    tensors = {(t, 16): torch.randn(8, generator=g) for t in TRAITS}
    return TraitVectors(list(TRAITS), [16], tensors, {16: 2.0}, {"key": key, "unit": {"16": 2.0}})


def test_vector_file_roundtrip_and_corruption(tmp_path: Path):
    path = tmp_path / "toy.safetensors"
    vec = _toy_vectors()
    save_vectors(vec, path)
    back = load_vectors(path)
    for k, v in vec.tensors.items():
        torch.testing.assert_close(back.tensors[k], v)
    m = back.steering_matrix(16)
    assert m.shape == (5, 8)
    torch.testing.assert_close(m.norm(dim=1), torch.full((5,), 2.0))
    # Truncated file: one line naming the file.
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(VectorFileError, match="toy.safetensors"):
        load_vectors(path)
    # Missing tensor.
    save_file({f"{t}.16": torch.ones(8) for t in TRAITS if t != "O"}, str(path))
    with pytest.raises(VectorFileError, match=r"toy.safetensors.*O\.16"):
        load_vectors(path)


@pytest.mark.model
def test_load_or_compute_caches_and_handles_corruption(backend, tmp_path: Path):
    data = load_contrast_data()
    small = ContrastData(data.system_template,
                         tuple(p for t in TRAITS for p in data.train_pairs(t)[:2]), (), (), {})
    args = (backend.model, backend.tokenizer, [16], small, tmp_path, "test-model", "float32")
    first = load_or_compute(*args)
    path = tmp_path / first.meta["file"]
    side = json.loads(path.with_name(path.name + ".json").read_text())
    for key in ("model_id", "layers", "data_hash", "norms", "token_position", "unit",
                "calibration", "median_token_norm", "key", "traits"):
        assert key in side, key
    assert side["layers"] == [16] and side["model_id"] == "test-model"
    assert set(side["norms"]) == {f"{t}.16" for t in TRAITS}
    again = load_or_compute(*args)
    assert again.meta["loaded_from"] == str(path)
    torch.testing.assert_close(again.tensors[("E", 16)], first.tensors[("E", 16)])
    path.write_bytes(b"garbage")
    with pytest.raises(VectorFileError, match=path.name):
        load_or_compute(*args, recompute_corrupt=False)
    with pytest.warns(UserWarning, match="recomputing"):
        redone = load_or_compute(*args)
    torch.testing.assert_close(redone.tensors[("E", 16)], first.tensors[("E", 16)])


@pytest.mark.model
def test_heldout_pairs_refused(backend):
    held = load_contrast_data().heldout_pairs("E")[:1]
    with pytest.raises(ValueError, match="held-out"):
        compute_trait_vectors(backend.model, backend.tokenizer, [16], held)


@pytest.mark.model
def test_hook_adds_alpha_times_v_for_its_row_only(backend):
    tok = backend.tokenizer
    seqs = ["The baker opened the shop early.",
            tok("Rain fell on the quiet town square all afternoon.")["input_ids"],
            tok("Hello there.")["input_ids"]]
    alphas = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [-0.5, 0, 0, 2.0, 0]])
    plain = backend.hidden_at(16, seqs)
    steered = backend.hidden_at(16, seqs, alphas)
    matrix = backend.vectors.steering_matrix(16)
    for row, (p, s) in enumerate(zip(plain, steered, strict=True)):
        expected = (alphas[row] @ matrix).expand_as(p)
        torch.testing.assert_close(s - p, expected, atol=1e-3, rtol=1e-4)
    assert torch.equal(plain[1], steered[1])  # the unsteered row is bit-identical
    # Upstream of the hook nothing changes.
    torch.testing.assert_close(backend.hidden_at(15, seqs), backend.hidden_at(15, seqs, alphas))


@pytest.mark.model
def test_alpha_one_is_calibrated(backend):
    med = backend.vectors.meta["median_token_norm"]["16"]
    norm = float(backend.vectors.steering_matrix(16)[0].norm())
    assert 0.1 * med < norm < 0.2 * med  # clear but coherent: 0.15 x median norm


@pytest.mark.model
def test_opposite_coefficients_move_trait_measure_oppositely(backend):
    data = load_contrast_data()
    items = [s for s in data.situations if s.trait == "E"][:3]
    margins = {}
    for a in (-1.0, 0.0, 1.0):
        total = 0.0
        for it in items:
            hi, lo = backend.reply_logprobs("You are a resident of a small town.", it.situation,
                                            [it.high, it.low], [{"E": a}, {"E": a}])
            total += hi - lo
        margins[a] = total / len(items)
    assert margins[-1.0] < margins[0.0] < margins[1.0]
