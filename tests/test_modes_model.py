"""Steering modes on the real SmolLM2: each mode does what it says at the hooks.

Tiny towns (4 agents x 2 ticks) through the real backend; each test fails if its mode
were ignored (treated as vectors).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from steertown.config import TRAITS
from steertown.config_loading import load_config
from steertown.inference.backend import GenerationRequest
from steertown.inference.embedder import HashingEmbedder
from steertown.inference.prefix_cache import PrefixKVCache
from steertown.sim.engine import Simulation
from steertown.steering import persona_text
from steertown.steering.modes import placebo_seed
from tests.model_fixtures import real_cfg, shared_backend

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def backend():
    return shared_backend()


@pytest.fixture
def spy(backend, monkeypatch):
    """Every (alphas, bases) the backend hands its hooks, as the hooks receive them."""
    calls = []
    original = backend.hooks.set_alphas

    def record(alphas, bases=None):
        if alphas is not None:
            calls.append((alphas.clone(), None if bases is None else list(bases)))
        return original(alphas, bases)

    monkeypatch.setattr(backend.hooks, "set_alphas", record)
    return calls


def tiny_run(backend, mode: str, ticks: int = 2, **steering):
    cfg_dict = real_cfg().to_dict()
    cfg_dict.update(population=4, max_events_per_tick=4, seed=5, memory={"embedder": "hashing"},
                    steering={**cfg_dict["steering"], "mode": mode,
                              "coefficients": {"E": 0.8, "A": -0.6}, **steering})
    cfg = load_config(cfg_dict)
    sim = Simulation(cfg, backend, HashingEmbedder(), f"modes-{mode}")
    return sim, [sim.run_tick(t) for t in range(1, ticks + 1)]


def test_prompt_mode_puts_persona_text_in_the_prompt_and_no_alphas_in_the_hooks(backend, spy):
    sim, results = tiny_run(backend, "prompt")
    decisions = [d for r in results for d in r.decisions]
    assert decisions
    for d in decisions:
        dose = {t: d[f"alpha_{t}"] for t in TRAITS}
        assert any(abs(v) >= persona_text.NEUTRAL_BELOW for v in dose.values())
        assert persona_text.describe(dose) in d["system"]
    assert spy and all(not torch.any(a != 0) for a, _ in spy)


def test_vectors_mode_puts_the_dose_in_the_hooks_and_no_text(backend, spy):
    sim, results = tiny_run(backend, "vectors")
    decisions = [d for r in results for d in r.decisions]
    assert decisions and all(persona_text.HEADER not in d["system"] for d in decisions)
    assert spy and all(torch.any(a != 0) for a, _ in spy)
    assert all(b is None or set(b) == {None} for _, b in spy)


def test_placebo_mode_steers_on_random_directions_of_the_trait_norms(backend, spy):
    sim, results = tiny_run(backend, "placebo")
    key = ("placebo", placebo_seed(5))
    assert spy and all(torch.any(a != 0) and set(b) == {key} for a, b in spy)
    for layer in backend.layers:
        trait, placebo = backend.vectors.steering_matrix(layer), backend.hooks.basis(key)[layer]
        assert torch.allclose(placebo.norm(dim=1), trait.norm(dim=1), rtol=1e-5)
        cos = torch.nn.functional.cosine_similarity(placebo, trait, dim=1)
        assert cos.abs().max() < 0.25  # random in 576 dims: |cos| ~ 0.04


def test_off_mode_equals_unsteered(backend, spy):
    _, off = tiny_run(backend, "off")
    _, zero = tiny_run(backend, "vectors", strength=0.0)
    assert [m["content"] for r in off for m in r.messages] == \
        [m["content"] for r in zero for m in r.messages]
    assert all(not torch.any(a != 0) for a, _ in spy)
    _, steered = tiny_run(backend, "vectors", strength=3.0)
    assert [m["content"] for r in off for m in r.messages] != \
        [m["content"] for r in steered for m in r.messages]


def test_placebo_rows_batch_exactly_and_never_share_a_prefix_with_trait_rows(backend):
    saved = dataclasses.replace(backend.cfg.inference)
    backend.cfg.inference.temperature = 0.0
    try:
        base = GenerationRequest("a", "You are Ana, the town baker.",
                                 "You are at the cafe. What do you do?", {"E": 3.0}, 10, seed=1)
        placebo = dataclasses.replace(base, request_id="p", placebo_seed=99)
        plain = dataclasses.replace(base, request_id="u", steering={})
        backend.prefix_kv = PrefixKVCache()
        trait_row = backend.generate_batch([base])[0]
        together = backend.generate_batch([base, placebo, plain])
        assert together[1].extra["prefix_cache"] == "miss"  # same alphas, other basis
        alone = backend.generate_batch([placebo])[0]
        assert together[1].text == alone.text and together[0].text == trait_row.text
        assert len({trait_row.text, alone.text, together[2].text}) == 3
    finally:
        backend.cfg.inference = saved


def test_onnx_backend_steers_placebo_rows_like_the_torch_hooks():
    """model.backend=onnx: a placebo row's steer input is alpha @ the same placebo matrix."""
    from test_onnx_backend import onnx_backend

    onnx = onnx_backend()
    alphas = torch.tensor([[1.0, -0.5, 0, 0, 2.0], [1.0, -0.5, 0, 0, 2.0]])
    feeds = onnx.steer_inputs(alphas, [None, 77])
    key = onnx.reference.basis_key(77)
    for layer in onnx.layers:
        got = torch.from_numpy(feeds[f"steer_L{layer}"][:, 0])
        assert torch.allclose(got[0], alphas[0] @ onnx.reference.hooks.basis(None)[layer],
                              atol=1e-5)
        assert torch.allclose(got[1], alphas[1] @ onnx.reference.hooks.basis(key)[layer],
                              atol=1e-5)
        assert not torch.allclose(got[0], got[1])
    plain = onnx.steer_inputs(alphas)  # no seeds: the trait-vector path as before
    assert all(np.array_equal(plain[k][0], feeds[k][0]) for k in plain)
