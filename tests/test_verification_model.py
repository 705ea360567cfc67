"""Steering verification on the real model (SmolLM2, marked `model`): the mechanistic
checks, the dose-response direction, the default-budget dose gate and a small-budget
verify of a real run. The logged checks and statistics are in test_verification.py."""

from __future__ import annotations

import json

import pytest

from steertown.config import VerificationConfig
from steertown.storage.run_dir import RunDir
from steertown.verification.verdict import verify_run
from tests.synthetic_run import build_run


@pytest.fixture(scope="module")
def backend():
    from tests.model_fixtures import shared_backend

    return shared_backend()


def small_vcfg() -> VerificationConfig:
    v = VerificationConfig(items_per_trait=2, coefficients=[-2.0, 0.0, 2.0], random_directions=1)
    v.cross_trait = False  # read with getattr by model_checks (budget knobs)
    v.likert, v.likert_items, v.control_items = True, 2, 2
    v.coherence_prompts = 1
    v.coherence_tokens = 8
    v.messages_per_agent = 1
    return v


@pytest.mark.model
def test_mechanistic_checks_pass_and_catch_a_wrong_vector(backend, monkeypatch):
    from steertown.verification.model_checks import check_batch, check_residual, mech_alphas

    alphas = mech_alphas(backend.traits, ["E", "N"], 1.0)
    good = check_residual(backend, alphas)
    assert good.passed, good.figure
    assert good.data["max_abs_error"] < 1e-2 and good.data["zero_row_untouched"] == 1.0
    assert check_batch(backend, alphas, tokens=6).passed
    # If the hooks added anything but alpha @ V (here: V is claimed twice as long),
    # the residual check must fail.
    real = backend.vectors.steering_matrix
    monkeypatch.setattr(backend.vectors, "steering_matrix", lambda layer: 2 * real(layer))
    assert check_residual(backend, alphas).passed is False


@pytest.mark.model
def test_dose_response_direction_on_the_real_model(backend):
    from steertown.steering.contrast_data import load_contrast_data
    from steertown.verification.dose_response import SweepPlan, run_sweep

    plan = SweepPlan(traits=["E"], coefficients=[-2.0, 0.0, 2.0], items_per_trait=3, n_random=1,
                     cross=False, n_boot=200)
    res = run_sweep(backend, load_contrast_data(), plan).traits["E"]
    assert res.margin.slope > 0.1  # more extraverted steering -> extraverted reply likelier
    assert res.fd_slope > abs(res.random_slopes[0])  # and more than a random push
    assert res.likert is not None and len(res.likert.curve) == 3


@pytest.mark.model
@pytest.mark.slow
def test_default_budget_dose_gate_passes_every_trait(backend):
    """The correctly steered vectors pass `dose.margin.<T>` at the default budget. At the
    old 2 control items C read 0.96x (FAIL) with the default directions (docs)."""
    from steertown.steering.contrast_data import load_contrast_data
    from steertown.verification.dose_response import run_sweep
    from steertown.verification.model_checks import dose_checks, sweep_plan

    v = VerificationConfig()
    traits = list(backend.traits)
    result = run_sweep(backend, load_contrast_data(), sweep_plan(v, traits, 1.0, traits))
    checks = {c.name: c for c in dose_checks(result, traits, v)}
    assert all(checks[f"dose.margin.{t}"].passed for t in traits), \
        {t: checks[f"dose.margin.{t}"].figure for t in traits}
    assert min(result.traits[t].vs_random for t in traits) > 1.5


@pytest.mark.model
@pytest.mark.xfail(strict=True, reason=(
    "measured 2026-12-02 on the merged verdict: at this small budget (1 random direction, "
    "3 coefficients) dose.margin.C fails on the real model (2 items; A and C with 4 items), "
    "so the run reads FAIL, not NOT VERIFIED; open in issue 19. strict: passing again "
    "fails this marker, so the finding cannot go stale"))
def test_verify_run_with_the_model_small_budget(tmp_path, backend):
    run = build_run(tmp_path)
    RunDir(run).update_manifest(model=backend.describe())  # as the flow records it
    report = verify_run(run, backend=backend, vcfg=small_vcfg())
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["mechanistic.residual"]["passed"] and checks["mechanistic.residual"]["required"]
    assert checks["mechanistic.batch"]["passed"]
    for t in "EACON":  # the synthetic run steers every trait
        assert checks[f"dose.margin.{t}"]["required"]
        assert f"dose.likert.{t}" in checks and not checks[f"dose.likert.{t}"]["required"]
        assert "inrun." + t in checks  # informative with 4 agents
    assert "control.coherence" in checks and "control.random_directions" in checks
    # The synthetic run logged no decisions: the required in-situ check cannot run, so
    # the run is NOT VERIFIED (never PASS) even if everything else passed.
    assert checks["decisions"]["passed"] is None and checks["decisions"]["required"]
    failed = [n for n, c in checks.items() if c["required"] and c["passed"] is False]
    assert report["verdict"] == "NOT VERIFIED" and failed == [], failed
    assert "text.E" in checks and "text.agreement" in checks  # the MiniLM measure ran
    assert checks["dose.margin.E"]["data"]["slope"] > 0
    for line in (run / "verification" / "report.md").read_text().splitlines():
        if line.startswith("| "):  # figures contain |x|: escaped, so 4 columns stay 4
            assert line.replace("\\|", "").count("|") == 5, line
    saved = json.loads((run / "verification" / "model_checks.json").read_text())
    assert saved["sweep"]["coefficients"] == [-2.0, 0.0, 2.0]  # covers the run's 0.9
    for c in report["checks"]:  # model checks log flat numbers (MLflow metrics)
        if c["name"].split(".")[0] in ("mechanistic", "dose", "control", "inrun", "model"):
            assert all(isinstance(v, int | float) for v in c["data"].values()), c["name"]
