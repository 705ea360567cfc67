"""verify_run: every steering check on a run directory -> verification/report.{json,md}."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from steertown.storage.run_dir import RunDir, RunDirError, atomic_write_bytes, atomic_write_json
from steertown.verification.check import Check
from steertown.verification.logged import logged_checks


def verify_run(run_dir: str | Path, num_files: int = 0, backend=None, vcfg=None,
               progress=None, quick: bool = False,
               relabel: dict[str, str] | None = None) -> dict:
    """Run the checks, write the report files, return the report dict.

    `backend` is the run's loaded model backend; without it the model-based checks are
    skipped with the reason (e.g. an imported legacy run or `verification.model_checks:
    false`). `vcfg` (a VerificationConfig) sets the model checks' budget and thresholds;
    default: the run manifest's `config.verification`; its thresholds are floored at the
    project defaults. `progress`: a `progress.Progress` (default: silent). `quick`: a
    reduced budget; the report's verdict is then "QUICK LOOK" (never PASS/FAIL).
    `relabel`: replay a control run known to have steered each trait's alpha with another
    trait's vector ({trait: trait whose vector carried it}).
    """
    run = RunDir(run_dir).require()
    manifest = run.read_manifest()
    if backend is not None:
        check_backend_matches(manifest, backend)
    checks: list[Check] = logged_checks(run, num_files)
    checks += model_checks(run, manifest, backend, vcfg, num_files, progress, relabel)
    verdict = verdict_of(checks)
    report = {"run_id": run.run_id, "verdict": QUICK_LOOK if quick else verdict,
              "quick": quick,
              "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "num_files": num_files, "checks": [c.to_dict() for c in checks]}
    out = run.path / "verification"
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", format_markdown(report).encode())
    return report


QUICK_LOOK = "QUICK LOOK"  # --quick: a reduced budget is a quick look, not a verdict


def verdict_of(checks: list[Check]) -> str:
    """FAIL if a required check failed; NOT VERIFIED if one could not run (skipped), so
    a run whose model checks were skipped never reads as PASS; else PASS."""
    required = [c for c in checks if c.required]
    if any(c.passed is False for c in required):
        return "FAIL"
    if any(c.passed is None for c in required):
        return "NOT VERIFIED"
    return "PASS"


class BackendMismatchError(RunDirError):
    """The loaded backend is not the one the run was generated with (a user error:
    `steertown verify` prints it as one line)."""


def check_backend_matches(manifest: dict, backend) -> None:
    """Refuse (one-line BackendMismatchError) when the loaded backend's model, vectors,
    dtype or layers differ from what the run's manifest recorded at load time."""
    recorded = dict(manifest.get("model") or {})
    if not recorded or getattr(backend, "name", "") == "mock":
        return
    # model.vector_id is what the rows were steered with (a placebo's random directions,
    # "none (off)"); verify needs the trait vectors that was derived from.
    trait_ids = (manifest.get("steering") or {}).get("trait_vector_id")
    if trait_ids:
        recorded["vector_id"] = trait_ids
    loaded = backend.describe()
    diffs = [f"{k} {recorded[k]!r} (run) != {loaded.get(k)!r} (loaded)"
             for k in ("backend", "model_id", "vector_id", "dtype", "layers")
             if k in recorded and recorded[k] != loaded.get(k)]
    if diffs:
        raise BackendMismatchError(
            "verify: the loaded backend does not match the run's manifest: " + "; ".join(diffs))


def run_verification_config(manifest: dict):
    """The run's VerificationConfig (defaults when the manifest has none or it is invalid)."""
    from steertown.config import ConfigError, VerificationConfig
    from steertown.config_loading import load_config

    try:
        return load_config(manifest["config"]).verification
    except (KeyError, TypeError, ConfigError):
        # A manifest that does not validate (e.g. an edited, loosened threshold): the
        # project defaults, never the manifest's values.
        return VerificationConfig()


def model_checks(run: RunDir, manifest: dict, backend, vcfg=None, num_files: int = 0,
                 progress=None, relabel: dict[str, str] | None = None) -> list[Check]:
    """Mechanistic, dose-response, in-run, controls: need the run's model."""
    if manifest.get("source") == "legacy":
        reason = "imported legacy run: its model is not available"
    elif backend is None:
        reason = "no model backend loaded"
    elif getattr(backend, "name", "") == "mock":
        reason = "mock backend has no residual stream"
    else:
        from steertown.config_loading import floored
        from steertown.verification.model_checks import run_model_checks

        # Thresholds no looser than the project's, whoever passed vcfg (floors, issue 19).
        vcfg = floored(vcfg if vcfg is not None else run_verification_config(manifest))
        try:
            return run_model_checks(run, manifest, backend, vcfg, num_files, progress, relabel)
        except Exception as e:  # noqa: BLE001 - any failure is reported, with its type
            # Recorded as a failed required check (the report still gets written), not a
            # crash of the verify stage after a long run.
            return [Check("model", False, True, "model checks could not run",
                          detail=f"{type(e).__name__}: {e}")]
    # Required: a run whose model checks did not run is "NOT VERIFIED", never PASS.
    return [Check("model", None, True, "not verified", detail=reason)]


def format_line(c: dict) -> str:
    """One check as a terminal line: mark, PASS/FAIL/SKIP (NOT VERIFIED if required)."""
    skip = "NOT VERIFIED" if c["required"] else "SKIP"
    status = skip if c["passed"] is None else ("PASS" if c["passed"] else "FAIL")
    req = "" if c["required"] else " (informative)"
    return f"{'✓' if c['passed'] else ('-' if c['passed'] is None else '✗')} {status}: " \
           f"{c['name']}{req}: {c['figure']}" + (f" [{c['detail']}]" if c.get("detail") else "")


def format_markdown(report: dict) -> str:
    lines = [f"# Steering verification: {report['run_id']}", "",
             ("**Quick look, not a verdict** (reduced budget: `verify --quick`)"
              if report.get("quick") else
              f"**Verdict: {report['verdict']}** (required checks only)"), "",
             "| check | result | required | figure |", "|---|---|---|---|"]
    for c in report["checks"]:
        skip = "not verified" if c["required"] else "skip"
        res = skip if c["passed"] is None else ("pass" if c["passed"] else "FAIL")
        fig = c["figure"] + (f" ({c['detail']})" if c.get("detail") else "")
        fig = fig.replace("|", "\\|")  # figures say |slope|: keep the table intact
        lines.append(f"| {c['name']} | {res} | {'yes' if c['required'] else 'no'} | {fig} |")
    return "\n".join(lines + expected_table(report["checks"])) + "\n"


def expected_table(checks: list[dict]) -> list[str]:
    """Markdown rows: P(class) per unit coefficient per trait against the expected-behaviour
    table stated before measuring (`expected.EXPECTED`); reported, not required."""
    from steertown.verification.expected import EXPECTED, agreement

    rows = []
    for c in checks:
        t = c["name"].split(".", 1)[1] if c["name"].startswith("decisions.") else ""
        for cls, sign in EXPECTED.get(t, {}).items():
            d = c.get("data", {})
            if f"shift_{cls}" not in d:
                rows.append(f"| {t} | {'raise' if sign > 0 else 'lower'} {cls} | not offered "
                            "in the sampled decisions | |")
                continue
            lo, hi = d[f"shift_{cls}_ci_low"], d[f"shift_{cls}_ci_high"]
            rows.append(f"| {t} | {'raise' if sign > 0 else 'lower'} {cls} | "
                        f"{d[f'shift_{cls}']:+.3f} [{lo:+.3f}..{hi:+.3f}] | "
                        f"{agreement(t, cls, lo, hi)} |")
    if not rows:
        return []
    return ["", "## Expected behaviour (stated before measuring; reported, not required)", "",
            "P(class) per unit coefficient along the trait's axis at the run's sampled "
            "decisions (95% CI, agent bootstrap).", "",
            "| trait | expected | measured | reading |", "|---|---|---|---|", *rows]
