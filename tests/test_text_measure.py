"""The independent text measure: MiniLM axes from held-out pole texts, per-agent scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steertown.verification.text_measure import (
    agreement_with_dose,
    load_poles,
    said,
    text_checks,
)


def test_pole_texts_were_not_used_to_build_the_vectors():
    from steertown.steering.contrast_data import default_path

    used = json.dumps(json.loads(default_path().read_text())).lower()
    poles = load_poles()
    assert set(poles) == set("EACON")
    for p in poles.values():
        assert len(p["high"]) >= 8 and len(p["low"]) >= 8
        for s in p["high"] + p["low"]:
            assert s.lower() not in used, s


def test_said_keeps_the_free_text_only():
    assert said("Talk Ben: shall we go?") == "shall we go?"
    assert said("Work: fixing the bench") == "fixing the bench"
    assert said("Move park") == "" and said("Rest") == ""
    assert said("I will meet people and keep working: it matters.") == \
        "I will meet people and keep working: it matters."


def test_agreement_names_the_measure_that_ranks_traits_like_the_dose_response():
    slopes = {"E": 0.7, "A": 0.3, "C": 0.29, "O": 0.66, "N": 0.5}
    same = {t: v / 2 for t, v in slopes.items()}
    reverse = {t: -v for t, v in slopes.items()}
    c = agreement_with_dose(slopes, {"text": same, "inrun": reverse})
    assert c.passed and "closest: text" in c.figure
    assert agreement_with_dose(slopes, {"inrun": reverse}).passed is False


@pytest.mark.model
def test_text_measure_ranks_agents_by_what_they_said():
    from steertown.inference.embedder import MiniLMEmbedder

    emb = MiniLMEmbedder()
    # Agents with a higher E say more outgoing things (sentences not in the pole file).
    lines = ["Talk Kim: I'll stay in and read quietly tonight.",
             "Work: sorting papers alone in the back room",
             "Talk Kim: maybe we could have a coffee sometime",
             "Talk Kim: hey all, let's get everyone together at the cafe!",
             "Talk Kim: come on, the whole street is invited to my party tonight!"]
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    msgs = {"agent_id": [f"a{i}" for i in range(5)], "content": lines,
            **{f"alpha_{t}": [0.0] * 5 for t in "ACON"}, "alpha_E": alphas}
    c = text_checks(emb, msgs, ["E"], 0.2)[0]
    assert c.name == "text.E" and c.data["rho"] >= 0.7, c.figure
    msgs["alpha_E"] = alphas[::-1]  # the same texts against reversed coefficients
    assert text_checks(emb, msgs, ["E"], 0.2)[0].data["rho"] <= -0.7
    assert np.isfinite(c.data["ci_low"])
