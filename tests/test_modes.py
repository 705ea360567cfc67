"""Steering modes (vectors | prompt | placebo | off) and per-agent interventions.

Mock and toy-tensor tests of the machinery; the real-model checks of each mode are in
tests/test_modes_model.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steertown.agents import prompts
from steertown.config import TRAITS, ConfigError
from steertown.config_loading import load_config
from steertown.inference.embedder import HashingEmbedder
from steertown.inference.mock import MockBackend
from steertown.sim.engine import Simulation
from steertown.steering import persona_text
from steertown.steering.hooks import SteeringHooks
from steertown.steering.modes import placebo_seed, steering_record
from steertown.steering.vectors import TraitVectors
from steertown.world.residents import sample_population


def mock_cfg(**over):
    base = {"model": {"name": "mock"}, "memory": {"embedder": "hashing"}, "population": 12,
            "steps": 10}
    base.update(over)
    return load_config(base)


def make_sim(**over) -> Simulation:
    cfg = mock_cfg(**over)
    return Simulation(cfg, MockBackend(cfg.layers), HashingEmbedder(), "test")


class Recording(MockBackend):
    """The mock, keeping every request it was sent."""

    def __init__(self, layers):
        super().__init__(layers)
        self.requests = []

    def generate_batch(self, requests):
        self.requests += requests
        return super().generate_batch(requests)


def recorded(mode: str, ticks: int = 5, **over):
    over.setdefault("steering", {"mode": mode, "coefficients": {"E": 0.6, "A": -0.5}})
    cfg = mock_cfg(**over)
    backend = Recording(cfg.layers)
    sim = Simulation(cfg, backend, HashingEmbedder(), "test")
    rows = [sim.run_tick(t) for t in range(1, ticks + 1)]
    return sim, backend.requests, rows


# --- config ---------------------------------------------------------------------------
def test_mode_is_validated_with_one_line():
    with pytest.raises(ConfigError, match=r"^steering.mode: 'vector' is out of range; "
                                          r"allowed: vectors \| prompt \| placebo \| off$"):
        load_config({"steering": {"mode": "vector"}})
    assert load_config({}).steering.mode == "vectors"


def test_legacy_enabled_maps_to_mode():
    assert load_config({"steering": {"enabled": False}}).steering.mode == "off"
    assert load_config({"steering": {"enabled": True, "mode": "prompt"}}).steering.mode == "prompt"
    with pytest.raises(ConfigError, match="^steering.enabled: false contradicts steering.mode=placebo"):
        load_config({"steering": {"enabled": False, "mode": "placebo"}})
    with pytest.raises(ConfigError, match="^steering.enabled: expected true or false"):
        load_config({"steering": {"enabled": "no"}})


@pytest.mark.parametrize("agents,message", [
    ({"agent-012": {"A": 0.9}}, r"^steering.agents.agent-012: unknown agent id; allowed: "
                                r"agent-000..agent-011 \(population 12\)$"),
    ({"bob": {"A": 0.9}}, r"^steering.agents.bob: unknown agent id"),
    ({"agent-003": {"X": 0.9}}, r"^steering.agents.agent-003.X: 'X' is out of range; "
                                r"allowed: a trait: E \| A \| C \| O \| N$"),
    ({"agent-003": {"A": 1.5}}, r"^steering.agents.agent-003.A: 1.5 is out of range; "
                                r"allowed: a number in \[-1, 1\]$"),
    ({"agent-003": 0.9}, r"^steering.agents.agent-003: expected a mapping"),
])
def test_bad_agent_overrides_get_one_line(agents, message):
    with pytest.raises(ConfigError, match=message):
        mock_cfg(steering={"agents": agents})


def test_agent_override_changes_only_that_agent_and_trait():
    base = sample_population(mock_cfg())
    over = sample_population(mock_cfg(steering={"agents": {"agent-003": {"A": 0.9}}}))
    for a, b in zip(base, over, strict=True):
        for t in TRAITS:
            if (a.agent_id, t) == ("agent-003", "A"):
                assert b.traits[t] == 0.9 and a.traits[t] != 0.9
            else:
                assert a.traits[t] == b.traits[t]
        assert (a.goal, a.home) == (b.goal, b.home)


def test_agent_override_reaches_the_logged_alphas():
    sim, reqs, results = recorded("vectors", ticks=6, steering={
        "mode": "vectors", "strength": 2.0, "agents": {"agent-003": {"A": 0.9}}},
        population=4, optimization={"reflect_every_n_ticks": 2})
    assert sim.by_id["agent-003"].traits["A"] == 0.9
    rows = [m for res in results for m in res.messages if m["agent_id"] == "agent-003"]
    assert rows and all(m["alpha_A"] == pytest.approx(1.8) for m in rows)
    mine = [r for r in reqs if r.request_id.endswith("-agent-003")]  # its reflections
    assert mine and all(r.steering["A"] == pytest.approx(1.8) for r in mine)


# --- delivery by mode -----------------------------------------------------------------
def test_vectors_mode_sends_the_dose_to_the_hooks_and_no_trait_words():
    sim, reqs, results = recorded("vectors")
    for r in reqs:
        assert r.steering == r.dose and r.placebo_seed is None
        assert "personality" not in r.system
        for high, low in persona_text.POLES.values():
            assert high not in r.system and low not in r.system
    msgs = [m for res in results for m in res.messages]
    assert {m["steering_mode"] for m in msgs} == {"vectors"}


def test_prompt_mode_renders_text_and_sends_zero_alphas():
    sim, reqs, results = recorded("prompt")
    assert reqs
    for r in reqs:
        assert all(v == 0.0 for v in r.steering.values()) and r.placebo_seed is None
        agent = next(a for a in sim.agents if r.system.startswith(f"You are {a.name},"))
        expected = persona_text.describe(r.dose)
        assert expected and expected in r.system
        base = prompts.persona(agent) if r.kind == "action" else prompts.reflection_persona(agent)
        assert r.system == persona_text.with_persona_text(base, r.dose) != base
    msgs = [m for res in results for m in res.messages]
    decisions = [d for res in results for d in res.decisions]
    agents = {a.agent_id: a for a in sim.agents}
    for m in msgs:  # rows log the dose the text was rendered from
        assert m["steering_mode"] == "prompt" and m["strength"] == 1.0
        assert m["alpha_E"] == pytest.approx(agents[m["agent_id"]].traits["E"])
    assert decisions and all(persona_text.HEADER in d["system"] for d in decisions)


def test_off_mode_sends_and_logs_zero():
    sim, reqs, results = recorded("off")
    assert all(all(v == 0 for v in r.steering.values()) for r in reqs)
    assert all("personality" not in r.system for r in reqs)
    msgs = [m for res in results for m in res.messages]
    assert all(m["strength"] == 0.0 and m["steering_mode"] == "off" for m in msgs)
    assert all(m[f"alpha_{t}"] == 0.0 for m in msgs for t in TRAITS)


def test_placebo_mode_sends_dose_on_a_seeded_basis():
    sim, reqs, results = recorded("placebo", seed=3)
    assert {r.placebo_seed for r in reqs} == {placebo_seed(3)}
    assert placebo_seed(3) != placebo_seed(4)
    assert all(r.steering == r.dose and any(r.dose.values()) for r in reqs)
    msgs = [m for res in results for m in res.messages]
    assert {m["steering_mode"] for m in msgs} == {"placebo"}


def _talk_slope(mode: str, seeds=(0, 1, 2)) -> float:
    """Slope of an agent's TALK share on its E over a few mock runs."""
    xs, ys = [], []
    for seed in seeds:
        cfg = mock_cfg(population=40, seed=seed, max_events_per_tick=20,
                       steering={"mode": mode, "spread": 0.8})
        sim = Simulation(cfg, MockBackend(cfg.layers), HashingEmbedder(), "t")
        acts = [a for t in range(1, 16) for a in sim.run_tick(t).actions]
        for agent in sim.agents:
            mine = [a for a in acts if a["agent_id"] == agent.agent_id]
            if mine:
                xs.append(agent.traits["E"])
                ys.append(sum(a["action_type"] == "TALK" for a in mine) / len(mine))
    return float(np.polyfit(xs, ys, 1)[0])


def test_mock_placebo_and_prompt_do_not_steer_like_vectors():
    vectors, placebo, off = (_talk_slope(m) for m in ("vectors", "placebo", "off"))
    assert vectors > 0.05  # measured 0.082 (placebo 0.003, off 0.021) on these seeds
    assert abs(placebo) < vectors / 2 and abs(off) < vectors / 2


def test_manifest_records_the_vector_id_by_mode():
    assert steering_record("vectors", "abc", 7)["vector_id"] == "abc"
    rec = steering_record("placebo", "abc", 7)
    assert "placebo" in rec["vector_id"] and rec["placebo_seed"] == 7
    assert rec["trait_vector_id"] == "abc"
    assert "none" in steering_record("prompt", "abc", 7)["vector_id"]


# --- persona text ---------------------------------------------------------------------
def test_persona_text_poles_and_intensity():
    assert persona_text.describe({t: 0.1 for t in TRAITS}) == ""
    text = persona_text.describe({"E": 0.9, "A": -0.3, "N": 2.0})
    assert text.startswith(persona_text.HEADER)
    assert "very outgoing" in text and "somewhat critical" in text
    assert "extremely anxious" in text and "organised" not in text
    assert persona_text.with_persona_text("Line one.\nReply: X", {"E": -0.5}) == (
        "Line one.\nYour personality: you are quite reserved, quiet and solitary.\nReply: X")


# --- placebo directions and per-row bases in the hooks (toy tensors) -------------------
def _toy_vectors(hidden: int = 64) -> TraitVectors:
    g = torch.Generator().manual_seed(0)
    tensors = {(t, layer): torch.randn(hidden, generator=g) for t in TRAITS for layer in (4, 8)}
    return TraitVectors(list(TRAITS), [4, 8], tensors, {4: 2.0, 8: 3.0}, {"key": "toy"})


def test_placebo_matrix_has_trait_norms_other_directions_and_is_seeded():
    vec = _toy_vectors()
    for layer in (4, 8):
        m = vec.steering_matrix(layer)
        p = vec.placebo_matrix(layer, seed=11)
        assert torch.allclose(p.norm(dim=1), m.norm(dim=1), rtol=1e-5)
        cos = torch.nn.functional.cosine_similarity(p, m, dim=1)
        assert cos.abs().max() < 0.6  # random in 64 dims: |cos| ~ 0.12
        assert torch.equal(p, vec.placebo_matrix(layer, seed=11))
        assert not torch.allclose(p, vec.placebo_matrix(layer, seed=12))
    assert not torch.allclose(vec.placebo_matrix(4, 11), vec.placebo_matrix(8, 11))


class _Toy(torch.nn.Module):
    """A stand-in decoder: `model.layers` of identity blocks, so hooks' additions show."""

    def __init__(self, hidden: int, n: int = 8):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList(torch.nn.Linear(hidden, hidden) for _ in range(n))
        for block in self.model.layers:
            torch.nn.init.eye_(block.weight)
            torch.nn.init.zeros_(block.bias)

    def forward(self, x):
        for block in self.model.layers:
            x = block(x)
        return x


def test_hooks_steer_each_row_on_its_own_basis():
    vec = _toy_vectors()
    toy = _Toy(64)
    hooks = SteeringHooks(toy, [4], {4: vec.steering_matrix(4)}, TRAITS)
    hooks.add_basis("p", {4: vec.placebo_matrix(4, 5)})
    alphas = torch.tensor([[1.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0], [0, 0.5, 0, 0, -1.0]])
    x = torch.zeros(3, 2, 64)
    with torch.no_grad(), hooks.steered(alphas, [None, "p", "p"]):
        y = toy(x)
    assert torch.allclose(y[0, 0], vec.steering_matrix(4)[0], atol=1e-6)
    assert torch.allclose(y[1, 1], vec.placebo_matrix(4, 5)[0], atol=1e-6)
    assert torch.allclose(y[2, 0], alphas[2] @ vec.placebo_matrix(4, 5), atol=1e-6)
    with torch.no_grad():
        assert torch.equal(toy(x), x)  # off after the context


def test_yaml_off_is_the_off_mode():
    assert load_config({"steering": {"mode": False}}).steering.mode == "off"


def test_hydra_agent_overrides_need_a_plus_and_say_so():
    from flows.compose import compose_run

    cfg = load_config(compose_run("fast", 0, ["model=mock", "+steering.agents.agent-003.A=0.9"]))
    assert cfg.steering.agents == {"agent-003": {"A": 0.9}}
    with pytest.raises(ConfigError, match=r"^steering.agents.agent-003.A: per-agent coefficients "
                                          r"are new keys; write \+steering.agents.agent-003.A=VALUE$"):
        compose_run("fast", 0, ["model=mock", "steering.agents.agent-003.A=0.9"])


def test_report_says_a_control_runs_failing_checks_are_expected(tmp_path):
    from test_fork import parent_config, run_all

    from steertown.analysis.report import write_report

    pages = {}
    for mode in ("placebo", "vectors"):
        run = run_all(parent_config(tmp_path, steps=2, run_id=mode, steering={"mode": mode}))
        pages[mode] = write_report(run, tmp_path / "reports").read_text()
    assert "Control run (steering.mode=placebo)" in pages["placebo"]
    assert "expected to FAIL" in pages["placebo"]
    assert "expected to FAIL" not in pages["vectors"]
