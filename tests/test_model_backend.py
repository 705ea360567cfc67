"""TransformersBackend on the real SmolLM2: batch == single, limits, cache, embedders."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from steertown.inference.backend import GenerationRequest
from steertown.inference.embedder import HashingEmbedder
from steertown.inference.prefix_cache import PrefixKVCache
from tests.model_fixtures import real_cfg, shared_backend

ROWS = [
    ("You are Ana, the town baker.", "You are at the cafe. What do you do?", {"E": 1.0}),
    ("You are Bob, the librarian. You have lived in Maple Town for thirty years and "
     "know every family by name.", "You are in the park and it is raining. What do you do now?",
     {"E": -1.0, "N": 0.5}),
    ("You are Cy.", "Say hello.", {}),
]


def _requests(max_new: int = 12, kind: str = "reflection") -> list[GenerationRequest]:
    return [GenerationRequest(f"r{i}", s, u, st, max_new, seed=40 + i, kind=kind)
            for i, (s, u, st) in enumerate(ROWS)]


@pytest.fixture(scope="module")
def backend():
    return shared_backend()


@pytest.fixture
def decoding(backend):
    """Temporarily change decoding settings on the shared backend."""
    saved = dataclasses.replace(backend.cfg.inference)
    saved_prefix = backend.cfg.optimization.prefix_cache
    yield backend.cfg
    backend.cfg.inference = saved
    backend.cfg.optimization.prefix_cache = saved_prefix


@pytest.mark.model
@pytest.mark.parametrize("temperature,prefix_cache", [(0.0, False), (0.8, True)])
def test_batch_equals_single(backend, decoding, temperature, prefix_cache):
    decoding.inference.temperature = temperature
    decoding.optimization.prefix_cache = prefix_cache
    reqs = _requests()
    batch = backend.generate_batch(reqs)
    assert [r.request_id for r in batch] == ["r0", "r1", "r2"]
    for req, got in zip(reqs, batch, strict=True):
        alone = backend.generate_batch([req])[0]
        assert (got.text, got.tokens_out, got.tokens_in) == (alone.text, alone.tokens_out,
                                                             alone.tokens_in)
        assert got.tokens_in == backend.count_prompt_tokens(req)
        assert 1 <= got.tokens_out <= req.max_new_tokens


@pytest.mark.model
def test_prefix_cache_state_never_changes_output(backend, decoding):
    decoding.inference.temperature = 0.8
    decoding.optimization.prefix_cache = True
    reqs = _requests(max_new=8)
    backend.prefix_kv = PrefixKVCache()
    cold = backend.generate_batch(reqs)
    assert [r.extra["prefix_cache"] for r in cold] == ["miss"] * 3
    warm = backend.generate_batch(reqs)
    assert [r.extra["prefix_cache"] for r in warm] == ["hit"] * 3
    backend.prefix_kv = PrefixKVCache()
    backend.generate_batch(reqs[1:2])
    mixed = backend.generate_batch(reqs)
    assert [r.extra["prefix_cache"] for r in mixed] == ["miss", "hit", "miss"]
    # Different steering is a different prefix: never served from another agent's entry.
    other = backend.generate_batch([dataclasses.replace(reqs[1], steering={"E": -2.0})])[0]
    assert other.extra["prefix_cache"] == "miss"
    for a, b, c in zip(cold, warm, mixed, strict=True):
        assert a.text == b.text == c.text and a.tokens_out == b.tokens_out == c.tokens_out


@pytest.mark.model
def test_steering_changes_output_and_zero_alphas_mean_unsteered(backend, decoding):
    decoding.inference.temperature = 0.0
    base = GenerationRequest("a", ROWS[0][0], ROWS[0][1], {}, 12, seed=1)
    steered = dataclasses.replace(base, steering={"E": 2.0})
    zero = dataclasses.replace(base, steering={"E": 0.0}, dose={"E": 2.0})  # prompt/off mode
    plain, pushed, off = backend.generate_batch([base, steered, zero])
    assert plain.text != pushed.text
    assert off.text == plain.text and off.extra["alphas"]["E"] == 0.0


@pytest.mark.model
def test_per_row_limits_and_action_line_stop(backend, decoding):
    decoding.inference.temperature = 0.8
    reqs = [dataclasses.replace(r, stop_at_newline=True) for r in _requests(kind="action")]
    reqs[1] = dataclasses.replace(reqs[1], max_new_tokens=3)
    res = backend.generate_batch(reqs)
    assert res[1].tokens_out <= 3
    for r in res:
        assert "\n" not in r.text
        assert r.extra["stop"] in ("eos", "newline", "length", "sentence")


@pytest.mark.model
def test_repetition_penalty_scope(backend, decoding):
    """inference.penalize_prompt_tokens: with it on, the penalty counts the prompt's words,
    so the replies reuse fewer of them (greedy, so only the penalty's history can change
    the tokens); off, the prompt's words are as free as any other."""
    decoding.inference.temperature = 0.0
    decoding.inference.repetition_penalty = 1.5
    words = "lantern harbour lantern harbour"
    reqs = [GenerationRequest(f"p{i}", "You repeat what you are told.", u, {}, 16, seed=40 + i,
                              kind="reflection")
            for i, u in enumerate([f"Say these words back: {words}.",
                                   f"Repeat after me: {words}.",
                                   "The lantern is by the harbour. Where is the lantern?"])]
    tok = backend.tokenizer

    def reused(results) -> int:
        """Reply tokens that are tokens of the request's own prompt (system and user)."""
        n = 0
        for req, res in zip(reqs, results, strict=True):
            prompt = set(tok(f"{req.system} {req.user}", add_special_tokens=False)["input_ids"])
            n += sum(t in prompt for t in tok(res.text, add_special_tokens=False)["input_ids"])
        return n

    decoding.inference.penalize_prompt_tokens = False
    reply_only = backend.generate_batch(reqs)
    decoding.inference.penalize_prompt_tokens = True
    with_prompt = backend.generate_batch(reqs)
    assert reused(with_prompt) < reused(reply_only), (
        [r.text for r in reply_only], [r.text for r in with_prompt])


@pytest.mark.model
def test_option_choice_is_never_penalised(backend, decoding):
    """The repetition penalty applies to free text only: with the prompt's tokens counted,
    a greedy option choice is the same as without any penalty."""
    decoding.inference.temperature = 0.0
    decoding.inference.penalize_prompt_tokens = True
    options = ("Move park", "Talk Ben:", "Rest")
    # "Rest" starts a line of the prompt (the same token as a reply's first word), the others
    # do not: a penalty on the choice would push every row away from Rest.
    reqs = [GenerationRequest(f"o{i}", "You live in a town. When tired you answer:\nRest",
                              u, {}, 6, seed=80 + i, kind="action", stop_at_newline=True,
                              options=options)
            for i, u in enumerate(["You are very tired.", "You are exhausted after work.",
                                   "It is late and you are tired.", "You feel sleepy."])]
    decoding.inference.repetition_penalty = 1.0
    plain = [r.option for r in backend.generate_batch(reqs)]
    decoding.inference.repetition_penalty = 3.0
    penalised = [r.option for r in backend.generate_batch(reqs)]
    assert penalised == plain


@pytest.mark.model
def test_first_person_work_lines(backend, decoding):
    """inference.first_person_work: no second-person words after the "Work: I" option."""
    import re

    you = re.compile(r"\byou(?:r|rs|rself)?\b", re.I)
    reqs = [GenerationRequest(f"w{i}", "You are a helpful assistant.",
                              "Greet the user and offer to help them with their question.",
                              {}, 24, seed=70 + i, kind="action", stop_at_newline=True,
                              options=("Work: I",)) for i in range(4)]
    decoding.inference.temperature = 0.8
    decoding.inference.first_person_work = False
    free = backend.generate_batch(reqs)
    decoding.inference.first_person_work = True
    masked = backend.generate_batch(reqs)
    assert any(you.search(r.text) for r in free)  # the prompt does draw "you" out
    assert all(r.text.startswith("Work: I") and not you.search(r.text) for r in masked)


@pytest.mark.model
def test_action_lines_stop_after_one_sentence(backend, decoding):
    """inference.stop_at_sentence: a free-text action line ends with its first full sentence."""
    from steertown.inference.constrained import sentence_done

    decoding.inference.temperature = 0.8
    reqs = [dataclasses.replace(r, options=("Work: I",), max_new_tokens=40, stop_at_newline=True)
            for r in _requests(kind="action")]
    decoding.inference.stop_at_sentence = False
    long = backend.generate_batch(reqs)
    decoding.inference.stop_at_sentence = True
    short = backend.generate_batch(reqs)
    assert all(r.extra["stop"] != "sentence" for r in long)
    assert any(r.extra["stop"] == "sentence" for r in short)
    for a, b in zip(long, short, strict=True):
        assert a.text.startswith(b.text)  # same tokens up to the stop
        if b.extra["stop"] == "sentence":
            assert sentence_done(b.text) and b.tokens_out < a.tokens_out


@pytest.mark.model
def test_action_keyword_constraint_and_adaptive_caps(backend, decoding):
    """Options constrain the reply's start: a complete option without ':' ends the reply,
    one with ':' continues freely; token_caps shrink the budget per action word."""
    decoding.inference.temperature = 0.8
    options = ("Move town_square", "Move park", "Talk Ben:", "Work:", "Rest")
    reqs = [dataclasses.replace(r, options=options, token_caps={"TALK": 5, "WORK": 5},
                                max_new_tokens=12, stop_at_newline=True)
            for r in _requests(kind="action")]
    res = backend.generate_batch(reqs)
    for r in res:
        assert r.text.startswith(options[:2] + options[4:]) or r.text.startswith(("Talk Ben:", "Work:")), r.text
        # the chosen option and its generation-time log-probability are reported
        assert r.option in options and r.text.startswith(r.option.rstrip(":"))
        assert -20.0 < r.option_logprob <= 0.0
        if r.text.startswith(("Move", "Rest")):
            assert r.text in options and r.extra["stop"] == "option"
        else:
            assert r.tokens_out <= 5


@pytest.mark.model
def test_describe_and_preflight(backend, monkeypatch):
    from steertown.inference import transformers_backend
    from steertown.preflight import format_findings, preflight

    # Other tests of the session may have loaded more models: pin the process's count.
    monkeypatch.setattr(transformers_backend, "LOAD_COUNT", 1)

    d = backend.describe()
    for key in ("model_id", "dtype", "device", "layers", "vector_id", "unit", "calibration"):
        assert d[key] is not None, key
    assert d["dtype"] == "float32" and d["layers"] == [16]
    json.dumps(d)  # goes into manifest.json
    found = {f["check"]: f for f in preflight(backend.cfg, backend)}
    assert found["device"]["status"] == "ok"
    assert found["model_loads"]["status"] == "ok"
    assert d["vector_id"] in found["steering"]["detail"]
    assert "[ok]" in format_findings(list(found.values()))
    monkeypatch.setattr(transformers_backend, "LOAD_COUNT", 2)  # a second load is flagged
    found = {f["check"]: f for f in preflight(backend.cfg, backend)}
    assert found["model_loads"]["status"] == "warn"


@pytest.mark.model
def test_model_cache_reused(backend):
    from steertown.inference.model_loading import load_model

    t0 = time.perf_counter()
    lm = load_model(real_cfg())
    assert lm.from_cache and time.perf_counter() - t0 < 30
    cache = Path(lm.source)
    assert (cache / "model.safetensors").exists() and (cache / "tokenizer.json").exists()
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    assert not list(cache.glob("*.bin")) and not list(cache.glob("*.pt"))


def test_missing_model_path_is_one_line():
    from steertown.inference.model_loading import load_model

    cfg = real_cfg()
    cfg.model.name_or_path = "/nonexistent/models/tiny"
    with pytest.raises(FileNotFoundError) as e:
        load_model(cfg)
    assert "/nonexistent/models/tiny" in str(e.value) and "\n" not in str(e.value)


def test_preflight_flags_reflection_every_tick():
    from steertown.preflight import preflight

    cfg = real_cfg()
    cfg.optimization.reflect_every_n_ticks = 1
    found = {f["check"]: f for f in preflight(cfg)}
    assert found["reflection"]["status"] == "warn"
    assert "reflect_every_n_ticks" in found["reflection"]["fix"]


def test_hashing_embedder():
    e = HashingEmbedder(dim=64)
    texts = ["Kim bakes bread at the cafe", "Kim bakes bread at the cafe today", "the river floods"]
    v = e.embed(texts)
    assert v.shape == (3, 64) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(v, HashingEmbedder(dim=64).embed(texts))
    assert v[0] @ v[1] > v[0] @ v[2]


@pytest.mark.model
def test_minilm_similar_closer_than_unrelated():
    from steertown.inference.embedder import MiniLMEmbedder

    v = MiniLMEmbedder().embed(["I had coffee with Kim at the cafe.",
                                "Kim and I drank coffee together in the cafe.",
                                "The library roof leaks when it rains."])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_sampling_is_row_independent():
    import torch

    from steertown.inference.sampling import apply_repetition_penalty, choose_tokens

    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)) * 3
    seen = torch.zeros(4, 1000, dtype=torch.bool)
    seen[:, :10] = True
    pen = apply_repetition_penalty(logits, seen, 1.3)
    assert torch.equal(pen[:, 10:], logits[:, 10:])
    # Exactly HF's penalty on the seen ids (positive logits / 1.3, negative ones * 1.3), so
    # every seen token became less likely; no penalty at all fails here.
    from transformers import RepetitionPenaltyLogitsProcessor

    ids = torch.arange(10).repeat(4, 1)
    torch.testing.assert_close(pen, RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone()))
    assert bool((pen[:, :10] < logits[:, :10]).all())

    def gens():
        return [torch.Generator().manual_seed(s) for s in (1, 2, 3, 4)]

    batch = choose_tokens(pen, 0.7, 0.9, gens())
    alone = [choose_tokens(pen[i:i + 1], 0.7, 0.9, [g])[0] for i, g in enumerate(gens())]
    assert batch == alone
    assert choose_tokens(pen, 0.0, 0.9, gens()) == pen.argmax(-1).tolist()
    # top_p tiny -> always the most likely token.
    assert choose_tokens(pen, 1.0, 1e-6, gens()) == pen.argmax(-1).tolist()
