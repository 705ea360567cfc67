"""Steering verification: logged checks on synthetic runs (pass and fail), the statistics
and thresholds (the real-model checks: test_verification_model.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steertown.config import VerificationConfig
from steertown.stats import dose_fit, spearman
from steertown.storage.run_dir import RunDir, atomic_write_parquet
from steertown.verification.dose_response import SweepResult, TraitSweep, sweep_coefficients
from steertown.verification.model_checks import control_checks, dose_checks
from steertown.verification.verdict import verify_run
from tests.synthetic_run import build_run

# ----- logged checks on synthetic runs -----


def _rewrite_messages(path, fn) -> None:
    """Apply `fn(table) -> table` to every message file of the run at `path`."""
    for f in RunDir(path).files("messages"):
        atomic_write_parquet(f, fn(pq.read_table(f)))


def _set_alphas(value):
    def fn(t):
        for name in [n for n in t.schema.names if n.startswith("alpha_")]:
            i = t.schema.get_field_index(name)
            col = pa.array([value] * t.num_rows, type=pa.float64())
            t = t.set_column(i, t.schema.field(i), col)
        return t
    return fn


def _by_name(report):
    return {c["name"]: c for c in report["checks"]}


@pytest.mark.parametrize("key,value", [("min_changed", 0.01), ("min_margin_slope", 0.0),
                                       ("min_vs_random", 0.5), ("replay_tolerance", 10.0),
                                       ("max_ppl_ratio", 9.0)])
def test_a_run_cannot_loosen_a_verdict_threshold(key, value):
    from steertown.config import ConfigError
    from steertown.config_loading import load_config

    with pytest.raises(ConfigError, match=f"verification.{key}: .* loosens the project "
                                          "threshold") as e:
        load_config({"verification": {key: value}}, new_run=True)
    assert "\n" not in str(e.value)
    # A recorded config (an old or edited manifest) still loads, floored.
    assert getattr(load_config({"verification": {key: value}}).verification, key) == \
        getattr(VerificationConfig(), key)
    tighter = 2 * getattr(VerificationConfig(), key) if key.startswith("min") else \
        getattr(VerificationConfig(), key) / 2
    assert getattr(load_config({"verification": {key: tighter}}, new_run=True).verification,
                   key) == tighter


def test_verify_floors_thresholds_it_is_given():
    from steertown.config_loading import floored

    loose = VerificationConfig(min_changed=0.0, replay_tolerance=5.0, min_dose_rho=0.99)
    f = floored(loose)
    assert (f.min_changed, f.replay_tolerance, f.min_dose_rho) == (0.05, 1e-3, 0.99)


def test_quick_is_a_quick_look_not_a_verdict(tmp_path, capsys):
    from steertown.cli import main as cli

    run = build_run(tmp_path)
    assert cli(["verify", str(run), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "quick look, not a verdict" in out
    assert "PASS" not in out.splitlines()[-1] and "FAIL" not in out.splitlines()[-1]
    report = json.loads((run / "verification" / "report.json").read_text())
    assert report["verdict"] == "QUICK LOOK" and report["quick"] is True
    assert "Quick look, not a verdict" in (run / "verification" / "report.md").read_text()


def test_logged_checks_pass_on_a_steered_run(tmp_path):
    run = build_run(tmp_path)
    report = verify_run(run)
    checks = _by_name(report)
    for name in ("logged.present", "logged.variation", "logged.diversity"):
        assert checks[name]["passed"] is True and checks[name]["required"]
    assert checks["model"]["passed"] is None  # no backend: skipped with the reason
    assert "no model backend" in checks["model"]["detail"]
    # Logging alone never reads as PASS: without the model checks the run is unverified.
    assert report["verdict"] == "NOT VERIFIED"
    saved = json.loads((run / "verification" / "report.json").read_text())
    assert saved["verdict"] == "NOT VERIFIED"
    assert "Verdict: NOT VERIFIED" in (run / "verification" / "report.md").read_text()
    from steertown.verification import format_line
    assert format_line(checks["model"]).startswith("- NOT VERIFIED: model")


def test_logged_checks_fail_when_steering_is_constant(tmp_path):
    run = build_run(tmp_path)
    _rewrite_messages(run, _set_alphas(0.0))
    report = verify_run(run)
    checks = _by_name(report)
    assert report["verdict"] == "FAIL"
    assert checks["logged.variation"]["passed"] is False
    assert checks["logged.diversity"]["passed"] is False
    assert checks["logged.nonzero_share"]["passed"] is False


def test_logged_checks_require_every_steered_trait_to_vary(tmp_path):
    run = build_run(tmp_path)

    def constant_c(t):  # C steered at 0.3 for everyone, the other traits still vary
        i = t.schema.get_field_index("alpha_C")
        return t.set_column(i, t.schema.field(i), pa.array([0.3] * t.num_rows, pa.float64()))

    _rewrite_messages(run, constant_c)
    checks = _by_name(verify_run(run))
    assert checks["logged.variation"]["passed"] is False
    assert "constant: C" in checks["logged.variation"]["detail"]
    assert checks["logged.diversity"]["passed"] is False


def test_verification_config_rejects_vacuous_controls():
    from steertown.config import ConfigError
    from steertown.config_loading import load_config

    for key in ("random_directions", "control_items"):
        with pytest.raises(ConfigError, match=f"verification.{key}"):
            load_config({"verification": {key: 0}})
    v = VerificationConfig()
    assert v.random_directions >= 4 and v.min_margin_slope > 0


def test_verify_refuses_a_backend_that_does_not_match_the_manifest(tmp_path):
    from steertown.verification.verdict import BackendMismatchError, check_backend_matches

    class Loaded:
        name = "transformers"

        def describe(self):
            return {"backend": "transformers", "model_id": "m", "vector_id": "v2",
                    "dtype": "float32", "layers": [16]}

    manifest = {"model": {"backend": "transformers", "model_id": "m", "vector_id": "v1",
                          "dtype": "float32", "layers": [16]}}
    with pytest.raises(BackendMismatchError, match="vector_id 'v1' \\(run\\) != 'v2'"):
        check_backend_matches(manifest, Loaded())
    manifest["model"]["vector_id"] = "v2"
    check_backend_matches(manifest, Loaded())  # same: accepted
    # a control run records what its rows used; verify compares the trait vectors behind it
    for used in ("placebo-s7-norms-of-v2", "none (persona text)", "none (off)"):
        control = {"model": {**manifest["model"], "vector_id": used},
                   "steering": {"vector_id": used, "trait_vector_id": "v2"}}
        check_backend_matches(control, Loaded())
        control["steering"]["trait_vector_id"] = "v1"
        with pytest.raises(BackendMismatchError, match="vector_id 'v1' \\(run\\) != 'v2'"):
            check_backend_matches(control, Loaded())
    run = build_run(tmp_path)
    RunDir(run).update_manifest(model={**manifest["model"], "dtype": "bfloat16"})
    with pytest.raises(BackendMismatchError, match="dtype"):
        verify_run(run, backend=Loaded())
    assert not (run / "verification" / "report.json").exists()  # refused, nothing written


def test_logged_checks_fail_when_alphas_are_missing(tmp_path):
    run = build_run(tmp_path)
    _rewrite_messages(run, _set_alphas(None))
    report = verify_run(run)
    assert report["verdict"] == "FAIL"
    assert _by_name(report)["logged.present"]["passed"] is False


def test_mock_backend_skips_model_checks(tmp_path):
    from steertown.inference.mock import MockBackend

    report = verify_run(build_run(tmp_path), backend=MockBackend([16]))
    assert "mock backend" in _by_name(report)["model"]["detail"]


def test_model_checks_that_crash_fail_the_verdict_with_the_reason(tmp_path):
    class Broken:
        name = "transformers"

        def describe(self):  # matches the synthetic manifest, so the checks start
            return {"backend": "mock"}

        @property
        def traits(self):
            raise RuntimeError("boom")

    report = verify_run(build_run(tmp_path), backend=Broken())
    assert report["verdict"] == "FAIL"
    assert "RuntimeError: boom" in _by_name(report)["model"]["detail"]


# ----- statistics and thresholds (no model) -----


def test_spearman_and_dose_fit():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    coefs = [-2, -1, 0, 1, 2]
    rng = np.random.default_rng(0)
    items = np.array(coefs)[None] * 0.5 + rng.normal(0, 0.05, (6, 5)) + rng.normal(0, 1, (6, 1))
    fit = dose_fit(items, coefs, n_boot=300)
    assert fit.slope == pytest.approx(0.5, abs=0.05)
    assert fit.ci_low < fit.slope < fit.ci_high and fit.ci_low > 0.4
    assert fit.r2 > 0.95 and fit.rho == pytest.approx(1.0)
    flat = dose_fit(rng.normal(0, 1, (6, 5)), coefs, n_boot=300)
    assert flat.ci_low < 0 < flat.ci_high  # no dose-response: CI straddles 0


def test_verification_items_are_held_out():
    from steertown.steering.contrast_data import load_contrast_data
    from steertown.verification.dose_response import held_out

    data = load_contrast_data()
    train_text = {x for p in data.train_pairs() for x in (p.high, p.low, p.user)}
    for t in "EACON":
        sits, liks = held_out(data, t, 8)
        assert sits and liks and all(s.trait == t for s in sits)
        assert not {x for s in sits for x in (s.situation, s.high, s.low)} & train_text
        assert not {q.statement for q in liks} & train_text


def test_sweep_covers_the_runs_strength():
    assert sweep_coefficients([-1, 1], 0.5) == [-1.0, 0.0, 1.0]
    assert sweep_coefficients([-1, 0, 1], 2.5) == [-2.5, -1.0, 0.0, 1.0, 2.5]


def _fake_sweep(slope: float, random: list[float], rho_sign: float = 1.0) -> SweepResult:
    coefs = [-1.0, 0.0, 1.0]
    grid = np.array([[rho_sign * slope * c + k * 0.01 for c in coefs] for k in range(4)])
    fit = dose_fit(grid, coefs, n_boot=100)
    return SweepResult({"E": TraitSweep("E", fit, None, rho_sign * slope, random)}, coefs, 1.0,
                       {}, 0.0, 0)


@pytest.mark.parametrize("slope, random, sign, ok", [
    (0.5, [0.05, -0.1], 1.0, True),  # strong, specific: pass
    (0.5, [0.6, -0.1], 1.0, False),  # a random direction moves the readout as much: fail
    (0.5, [0.05], -1.0, False),  # steering moves the readout the wrong way: fail
    (0.5, [0.0], -1.0, False),  # reversed, and the random slope is exactly 0: still fail
])
def test_dose_threshold_pass_and_fail(slope, random, sign, ok):
    res = _fake_sweep(slope, random, sign)
    check = dose_checks(res, ["E"], VerificationConfig())[0]
    assert check.name == "dose.margin.E" and check.required and check.passed is ok
    assert control_checks(res, ["E"], VerificationConfig())[0].passed is ok or sign < 0
    unsteered = dose_checks(res, [], VerificationConfig())[0]
    assert not unsteered.required  # a trait the run does not steer is informative only


def test_sweep_layers_cli_rejects_bad_arguments(capsys):
    from steertown.cli import main

    assert main(["sweep-layers", "--traits", "X"]) != 0
    assert "unknown X" in capsys.readouterr().err
    assert main(["sweep-layers", "--model", "mock"]) != 0


def test_best_layer_is_the_largest_gated_slope():
    from steertown.verification.layer_sweep import best_layers

    def row(layer, slope, ci_low=0.1, rho=1.0, vs=3.0):
        return {"trait": "E", "layer": layer, "slope": slope, "ci_low": ci_low, "rho": rho,
                "vs_random": vs, "r2": 0.9}

    rows = [row(8, 0.3), row(12, 0.9, ci_low=-0.1), row(16, 0.6), row(20, 0.8, vs=0.9),
            row(24, 0.5, rho=0.5)]
    assert best_layers(rows)["E"]["layer"] == 16  # 12: CI crosses 0; 20: a random beats it
    assert best_layers([row(8, 0.3, ci_low=-1)])["E"]["layer"] is None


@pytest.mark.model
@pytest.mark.filterwarnings("ignore:optimization.use_quantization")
def test_sweep_layers_cli_writes_table_and_json(tmp_path, capsys):
    from steertown.cli import main

    out = tmp_path / "sweep.json"
    assert main(["sweep-layers", "--layers", "16", "--traits", "E", "--items", "2",
                 "--coefficients", "-2", "2", "--random", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["trait"], r["layer"]) for r in result["rows"]] == [("E", 16)]
    assert result["rows"][0]["slope"] > 0
    assert "| E | 16 |" in out.with_suffix(".md").read_text()
    assert "best:" in capsys.readouterr().out


def test_dependencies_point_one_way():
    """verification/ uses steering/ and inference/; neither imports verification/."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "steertown"
    for pkg in ("steering", "inference"):
        for f in (src / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n.startswith("steertown.verification") for n in names), \
                    f"{f.relative_to(src)} imports verification"
