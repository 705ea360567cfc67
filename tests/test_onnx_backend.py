"""The ONNX Runtime backend on the real SmolLM2: steering in the graph, same tokens as torch,
batch == single, the decode loop's options and caps, and exact resume after kill -9."""

from __future__ import annotations

import copy
import dataclasses
import random
from functools import lru_cache

import numpy as np
import pytest
import torch
from test_model_backend import ROWS
from test_resume import assert_same_run, kill_at_random, run_driver, write_config

from steertown.inference.backend import GenerationRequest
from steertown.residual import right_pad
from tests.model_fixtures import shared_backend

pytestmark = pytest.mark.model


@lru_cache(maxsize=1)
def onnx_backend():
    """One OnnxBackend sharing the session's torch backend as its reference."""
    from steertown.inference.onnx_backend import OnnxBackend

    ref = shared_backend()
    return OnnxBackend(copy.deepcopy(ref.cfg), reference=ref)


def _requests(max_new: int = 16) -> list[GenerationRequest]:
    reqs = [GenerationRequest(f"r{i}", s, u, st, max_new, seed=40 + i)
            for i, (s, u, st) in enumerate(ROWS)]
    # A constrained action row with adaptive caps, like the engine's.
    reqs.append(GenerationRequest("act", ROWS[1][0], "You are in the park. Choose one action.",
                                  {"E": 2.0}, max_new, seed=7, kind="action",
                                  token_caps={"move": 4, "talk": 12}, stop_at_newline=True,
                                  options=("Move library", "Talk Ana:", "Rest")))
    return reqs


@pytest.fixture
def onnx():
    b = onnx_backend()
    saved = dataclasses.replace(b.cfg.inference)
    saved_prefix = b.cfg.optimization.prefix_cache
    yield b
    b.cfg.inference = saved
    b.cfg.optimization.prefix_cache = saved_prefix


def test_steer_input_adds_alpha_v_like_the_torch_hook(onnx):
    """Last-position logits of the graph match torch's, steered and unsteered."""
    ref = onnx.reference
    prompts = [ref.prompt_ids(s, u) for s, u, _ in ROWS]
    alphas = ref.alphas_for([st for *_, st in ROWS])
    ids, mask = right_pad(prompts, 0)
    lengths = np.asarray([len(p) for p in prompts])

    def onnx_logits(a):
        empty = np.zeros((len(prompts), onnx._kv_heads, 0, onnx._head_dim), np.float32)
        out = onnx.session.run(["logits"], {
            "input_ids": ids.numpy(), "attention_mask": mask.numpy(),
            "logits_index": (lengths - 1)[:, None, None], **onnx.steer_inputs(a),
            **{n: empty for n in onnx.past_names}})
        return torch.from_numpy(out[0][:, 0])

    plain_o, plain_t = onnx_logits(alphas * 0), _steered(ref, prompts, alphas * 0)
    steer_o, steer_t = onnx_logits(alphas), _steered(ref, prompts, alphas)
    assert (plain_o - plain_t).abs().max() < 2e-3
    assert (steer_o - steer_t).abs().max() < 2e-3
    # Steering moves the logits far more than the two runtimes differ (row 2: alpha 0).
    assert (steer_o[:2] - plain_o[:2]).abs().max() > 1.0
    assert torch.equal(steer_o[2], plain_o[2])


@torch.no_grad()
def _steered(ref, prompts, alphas):
    """Torch logits at each prompt's last position, one row at a time, with its alphas."""
    rows = []
    for p, a in zip(prompts, alphas, strict=True):
        with ref.steered(a[None]):
            rows.append(ref.model(input_ids=torch.tensor([p])).logits[0, -1])
    return torch.stack(rows)


def test_greedy_tokens_equal_the_torch_backend(onnx):
    onnx.cfg.inference.temperature = 0.0
    ref = onnx.reference
    saved = ref.cfg.inference
    ref.cfg.inference = onnx.cfg.inference
    try:
        got = onnx.generate_batch(_requests())
        want = ref.generate_batch(_requests())
    finally:
        ref.cfg.inference = saved
    assert [(g.text, g.option) for g in got] == [(w.text, w.option) for w in want]


@pytest.mark.parametrize("prefix_cache", [False, True])
def test_batch_equals_single_with_sampling_options_and_caps(onnx, prefix_cache):
    onnx.cfg.inference.temperature = 0.8
    onnx.cfg.optimization.prefix_cache = prefix_cache
    onnx.prefix_kv = type(onnx.prefix_kv)()  # cold: the batch misses, the single rows hit
    reqs = _requests()
    batch = onnx.generate_batch(reqs)
    if prefix_cache:
        assert {g.extra["prefix_cache"] for g in batch} == {"miss"}
    for req, got in zip(reqs, batch, strict=True):
        alone = onnx.generate_batch([req])[0]
        assert _facts(got) == _facts(alone)
    act = batch[-1]
    assert act.option in ("Move library", "Talk Ana:", "Rest")
    assert act.text.startswith(act.option.rstrip(":")) and act.option_logprob < 0


def _facts(g) -> tuple:
    """What must match between a batched row and the same row alone (nan == nan)."""
    lp = None if g.option_logprob != g.option_logprob else g.option_logprob
    return g.text, g.tokens_out, g.option, lp


def test_steering_changes_output_and_describe_names_the_runtime(onnx):
    onnx.cfg.inference.temperature = 0.0
    req = _requests(12)[0]
    steered = onnx.generate_batch([dataclasses.replace(req, steering={"E": 8.0})])[0].text
    plain = onnx.generate_batch([dataclasses.replace(req, steering={})])[0].text
    assert steered != plain
    d = onnx.describe()
    assert d["backend"] == "onnx" and d["runtime"].startswith("onnxruntime")


@pytest.mark.slow
def test_kill_after_a_checkpoint_then_resume_is_exact_on_onnx(tmp_path):
    over = dict(model={"name": "smollm2", "num_threads": 1, "backend": "onnx",
                       "dtype": "float32"},
                population=4, steps=6, checkpoint_every=2, max_events_per_tick=3,
                inference={"max_new_tokens": 8, "temperature": 0.8},
                optimization={"reflect_every_n_ticks": 3, "batch_size": 4})
    ref = write_config(tmp_path, "ref", **over)
    assert run_driver(ref).returncode == 0
    cfg = write_config(tmp_path, "victim", **over)
    run_dir = tmp_path / "dumps" / "victim"
    # Kill once at least 3 ticks are done, so the tick-2 checkpoint exists.
    rng = random.Random(5)
    rng.randint = lambda a, b: 3  # type: ignore[method-assign]
    assert kill_at_random(cfg, run_dir, rng, 5)
    r = run_driver(cfg)
    assert r.returncode == 0, r.stderr
    assert "restored_from 2" in r.stdout or "restored_from 4" in r.stdout, r.stdout
    assert_same_run(tmp_path / "dumps" / "ref", run_dir)


@pytest.mark.parametrize("lever", ["batched_rest", "bound_decode"])
def test_each_speed_lever_keeps_the_tokens(onnx, lever):
    """Batched rest-of-prompt prefill and decode on bound KV buffers change speed only:
    the same texts and options as with the lever off (sampling on), log-probs to 1e-5."""
    onnx.cfg.inference.temperature = 0.8
    onnx.cfg.optimization.prefix_cache = True
    default = getattr(onnx, lever)
    try:
        setattr(onnx, lever, True)
        on = onnx.generate_batch(_requests())
        setattr(onnx, lever, False)
        off = onnx.generate_batch(_requests())
    finally:
        setattr(onnx, lever, default)
    # Tokens, texts and options are identical; the option log-prob is compared to 1e-5:
    # batched_rest's attention graph sums in another order (measured: 2e-7 apart).
    assert [_facts(g)[:3] for g in on] == [_facts(g)[:3] for g in off]
    assert [_facts(g)[3] for g in on] == pytest.approx([_facts(g)[3] for g in off], abs=1e-5,
                                                        nan_ok=True)
