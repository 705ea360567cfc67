"""Model-based steering checks: the effect, not just the logging.

Called by `verification.verify_run` with the run's loaded backend (same model, vectors
and layers the run used). Four groups (see docs/verification.md):

1. mechanistic: a steered pass changes each hooked layer's residual by exactly
   `alpha @ V` per row (others untouched); a mixed batch reproduces single rows.
2. dose-response on held-out items, per trait: margin and Likert readouts.
3. in-run behaviour: agents' coefficients vs what they actually said.
4. controls and cost: random directions, cross-trait matrix, coherence (perplexity).

Required for the verdict: both mechanistic checks and the margin dose-response of each
trait the run steers. Everything else is informative.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from steertown.config import TRAITS, VerificationConfig
from steertown.inference.backend import GenerationRequest
from steertown.residual import captured, left_pad, pad_id
from steertown.steering.contrast_data import load_contrast_data
from steertown.storage.run_dir import RunDir, atomic_write_json
from steertown.verification.check import Check
from steertown.verification.decisions import decision_checks
from steertown.verification.dose_response import (
    SweepPlan,
    cross_summary,
    run_sweep,
    sweep_coefficients,
)
from steertown.verification.inrun import inrun_checks, load_run_messages
from steertown.verification.readouts import NEUTRAL_SYSTEM, Scorer
from steertown.verification.text_measure import agreement_with_dose, text_checks

# Defaults of every threshold and budget knob (reasons in docs/verification.md); a
# manifest written before a knob existed falls back to them.
DEFAULTS: dict[str, Any] = dataclasses.asdict(VerificationConfig())
COHERENCE_PROMPTS = [
    "Describe your morning in the town.",
    "What do you think about your neighbours?",
    "Tell me about your plans for the weekend.",
    "Someone new just moved in next door. What do you do?",
]
MECH_PROMPTS = ["Say hello.", "You are at the cafe. What do you do next?",
                "A neighbour asks you about the town festival next week. Answer briefly."]


def knob(vcfg: Any, name: str) -> Any:
    """A verification setting: from `vcfg` if it has it, else the documented default."""
    return getattr(vcfg, name, DEFAULTS[name])


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


@torch.no_grad()
def check_residual(backend: Any, alphas: torch.Tensor) -> Check:
    """Steered minus unsteered residual == alphas @ V at the first hooked layer; every
    hooked layer adds exactly its own alphas @ V_L within one steered pass."""
    seqs = [backend.prompt_ids(NEUTRAL_SYSTEM, p) for p in MECH_PROMPTS[:len(alphas)]]
    first = min(backend.layers)
    dtype = next(backend.model.parameters()).dtype
    tol_scale = 4 * _eps(dtype)  # one rounding of (h + d) - h, with margin
    plain = backend.hidden_at(first, seqs)
    steered = backend.hidden_at(first, seqs, alphas)
    worst, worst_ratio, zero_ok = 0.0, 0.0, True
    for r, (p, s) in enumerate(zip(plain, steered, strict=True)):
        exp = (alphas[r] @ backend.vectors.steering_matrix(first)).expand_as(p)
        err = (s - p - exp).abs()
        worst = max(worst, float(err.max()))
        worst_ratio = max(worst_ratio, float((err / (tol_scale * (p.abs() + exp.abs()) + 1e-6)).max()))
        if not torch.any(alphas[r] != 0):
            zero_ok &= bool(torch.equal(s, p))
    # Every hooked layer, in one steered pass: output before vs after the steering hook.
    ids, mask, pos = left_pad(seqs, pad_id(backend.tokenizer), backend.device)
    with captured(backend.model, backend.layers, before_steering=True) as pre, \
            captured(backend.model, backend.layers) as post, backend.steered(alphas):
        backend.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    pre = {k: v.cpu() for k, v in pre.items()}
    post = {k: v.cpu() for k, v in post.items()}
    layer_err = {}
    for layer in backend.layers:
        exp = (alphas @ backend.vectors.steering_matrix(layer))[:, None, :]
        diff = (post[layer] - pre[layer] - exp) * mask.cpu()[..., None]
        tol = tol_scale * (pre[layer].abs() + exp.abs()) + 1e-6
        layer_err[layer] = float((diff.abs() / tol).max())
    passed = worst_ratio <= 1.0 and zero_ok and max(layer_err.values()) <= 1.0
    unit = backend.vectors.unit[first] / len(backend.layers)
    n_pos = sum(len(s) for s in seqs)
    return Check(
        "mechanistic.residual", passed, True,
        f"layer {first}: steered - unsteered = alpha @ V (|v| = {unit:.2f} per unit alpha) "
        f"for {len(seqs)} rows x {n_pos} positions; max abs error {worst:.2e} "
        f"({worst_ratio:.2f} of the {dtype} rounding bound); zero-alpha row "
        f"{'untouched' if zero_ok else 'CHANGED'}; all {len(backend.layers)} hooked layers "
        f"add exactly alpha @ V_L: {'yes' if max(layer_err.values()) <= 1 else 'NO'}",
        data={"max_abs_error": worst, "error_vs_bound": worst_ratio, "unit": unit,
              "zero_row_untouched": float(zero_ok),
              **{f"layer{k}_error_vs_bound": v for k, v in layer_err.items()}})


@torch.no_grad()
def check_batch(backend: Any, alphas: torch.Tensor, tokens: int = 8) -> Check:
    """A mixed batch (different prompts, lengths, steering) == each row generated alone."""
    reqs = [GenerationRequest(f"mech{r}", NEUTRAL_SYSTEM, p,
                              dict(zip(backend.traits, alphas[r].tolist(), strict=True)),
                              tokens, seed=1000 + r, kind="reflection")
            for r, p in enumerate(MECH_PROMPTS[:len(alphas)])]
    together = backend.generate_batch(reqs)
    alone = [backend.generate_batch([r])[0] for r in reqs]
    same = [a.text == b.text and a.tokens_out == b.tokens_out
            for a, b in zip(together, alone, strict=True)]
    # Batch == single row is tested for float32 on CPU only; on CUDA float32 kernels may
    # depend on the batch shape, so there the check informs rather than decides.
    d = backend.describe()
    exact_dtype = d.get("dtype") == "float32" and str(d.get("device", "cpu")).startswith("cpu")
    return Check(
        "mechanistic.batch", all(same), exact_dtype,
        f"{sum(same)}/{len(same)} rows of a mixed, left-padded batch equal their single-row "
        f"output ({tokens} new tokens, seeded)",
        detail="" if exact_dtype else "not float32 on CPU: exactness is promised only there, "
                                      "so this check is informative",
        data={"identical_rows": float(sum(same)), "rows": float(len(same))})


def dose_checks(result: Any, steered: list[str], vcfg: Any) -> list[Check]:
    """Per trait: margin dose-response (required if the run steers it) and Likert."""
    checks = []
    for t, r in result.traits.items():
        m = r.margin
        # Positive slopes first: no threshold setting lets a flat or reversed trait pass.
        ok = (m.slope > 0 and r.fd_slope > 0 and r.random_slopes != []
              and m.ci_low > knob(vcfg, "min_margin_slope")
              and m.rho >= knob(vcfg, "min_dose_rho")
              and r.vs_random > knob(vcfg, "min_vs_random"))
        checks.append(Check(
            f"dose.margin.{t}", ok, t in steered,
            f"margin slope {m.slope:+.3f} nats/token per unit alpha (95% CI {m.ci_low:+.3f}.."
            f"{m.ci_high:+.3f}), R^2 {m.r2:.2f}, rho {m.rho:+.2f}; vs random directions "
            f"{r.vs_random:.1f}x (trait {r.fd_slope:+.3f}, random max |{r.random_max:.3f}|)",
            detail="" if t in steered else "the run does not steer this trait",
            data={"slope": m.slope, "ci_low": m.ci_low, "ci_high": m.ci_high, "r2": m.r2,
                  "rho": m.rho, "vs_random": min(r.vs_random, 1e6), "random_max": r.random_max,
                  "items": float(m.n_items)}))
        if r.likert is not None:
            lk = r.likert
            lo, hi = min(lk.curve.values()), max(lk.curve.values())
            checks.append(Check(
                f"dose.likert.{t}", lk.ci_low > 0 and lk.rho >= knob(vcfg, "min_dose_rho"), False,
                f"Likert slope {lk.slope:+.4f} per unit alpha (CI {lk.ci_low:+.4f}..{lk.ci_high:+.4f}), "
                f"R^2 {lk.r2:.2f}, rho {lk.rho:+.2f}; mean answer {lk.curve.get('0', lo):.2f} at 0, "
                f"range {lo:.2f}..{hi:.2f}",
                data={"slope": lk.slope, "ci_low": lk.ci_low, "ci_high": lk.ci_high,
                      "r2": lk.r2, "rho": lk.rho, "range": hi - lo}))
    return checks


def control_checks(result: Any, steered: list[str], vcfg: Any) -> list[Check]:
    """Random-direction control (per trait, summarised) and the cross-trait matrix."""
    checks = []
    if result.traits:
        ratios = {t: r.vs_random for t, r in result.traits.items()}
        n_rand = len(next(iter(result.traits.values())).random_slopes)
        checks.append(Check(
            "control.random_directions",
            n_rand > 0 and all(ratios[t] > knob(vcfg, "min_vs_random") and
                               result.traits[t].fd_slope > 0 for t in steered if t in ratios),
            False,
            f"trait slope / max |slope| of {n_rand} random directions of the same norm at "
            f"+-{result.control_coef:g}: " + ", ".join(f"{t} {v:.1f}x" for t, v in ratios.items()),
            data={f"{t}_vs_random": min(v, 1e6) for t, v in ratios.items()}))
    if result.cross:
        s = cross_summary(result.cross)
        checks.append(Check(
            "control.cross_trait", s["diag_wins"] == s["traits"], False,
            f"5x5 margin slopes at +-{result.control_coef:g} (steer i, measure j): diagonal mean "
            f"{s['diag_mean']:+.3f} vs off-diagonal mean |{s['offdiag_mean_abs']:.3f}|; "
            f"{s['diag_wins']:.0f}/{s['traits']:.0f} readouts moved most by their own trait",
            data={**s, **{f"{i}_on_{j}": v for i, row in result.cross.items()
                          for j, v in row.items()}}))
    return checks


@torch.no_grad()
def check_coherence(backend: Any, steered: list[str], strength: float, vcfg: Any) -> Check:
    """Perplexity (under the unsteered model) of text generated steered at the run's
    strength vs text generated unsteered, same prompts and seeds."""
    prompts = COHERENCE_PROMPTS[:knob(vcfg, "coherence_prompts")]
    conds = [{}] + [{t: s * strength} for t in steered for s in (-1, 1)]
    reqs = [GenerationRequest(f"coh{k}.{p}", NEUTRAL_SYSTEM, text, cond,
                              knob(vcfg, "coherence_tokens"), seed=7 + p, kind="reflection")
            for k, cond in enumerate(conds) for p, text in enumerate(prompts)]
    res = backend.generate_batch(reqs)
    scorer = Scorer(backend)
    tails = [backend.tokenizer(r.text or ".", add_special_tokens=False)["input_ids"] or [0]
             for r in res]
    lp = scorer.continuation_logprobs([backend.prompt_ids(q.system, q.user) for q in reqs],
                                      [("", 0.0)] * len(reqs), [[t] for t in tails])
    ppl = np.exp(-np.array([x[0] for x in lp])).reshape(len(conds), len(prompts)).mean(1)
    base = float(ppl[0])
    per = {f"{t}{'+' if s > 0 else '-'}": float(ppl[1 + 2 * i + (s > 0)])
           for i, t in enumerate(steered) for s in (-1, 1)}
    worst = max(per.values(), default=base)
    ratio = worst / base if base > 0 else float("inf")
    return Check(
        "control.coherence", ratio <= knob(vcfg, "max_ppl_ratio"), False,
        f"perplexity under the unsteered model: unsteered text {base:.1f}, steered at "
        f"+-{strength:g} worst {worst:.1f} ({ratio:.2f}x); "
        + ", ".join(f"{k} {v:.1f}" for k, v in per.items()),
        data={"ppl_unsteered": base, "ppl_worst": worst, "ppl_ratio": ratio,
              **{f"ppl_{k}": v for k, v in per.items()}})


def independent_text_checks(msgs: dict, steered: list[str], vcfg: Any, sweep: Any,
                            inrun: list[Check]) -> list[Check]:
    """The MiniLM text measure per trait, and which in-run measure agrees with the
    dose-response slopes (see text_measure.py)."""
    from steertown.inference import get_embedder

    try:
        embedder = get_embedder("minilm")
    except FileNotFoundError as e:  # the MiniLM package is optional at run time
        return [Check("text", None, False, "skipped", detail=str(e))]
    inrun_rho = {c.name.split(".", 1)[1]: c.data["rho"] for c in inrun if "rho" in c.data}
    text = text_checks(embedder, msgs, steered, vcfg.min_rho, inrun_rho, knob(vcfg, "seed"))
    text_rho = {c.name.split(".", 1)[1]: c.data["rho"] for c in text if "rho" in c.data}
    slopes = {t: r.margin.slope for t, r in sweep.traits.items()}
    return text + [agreement_with_dose(slopes, {"text": text_rho, "inrun": inrun_rho})]


def mech_alphas(traits: list[str], steered: list[str], strength: float) -> torch.Tensor:
    """Three rows: unsteered, one trait at the run's strength, a mix of every steered trait."""
    s = max(strength, 1.0)
    a = torch.zeros(3, len(traits))
    first = traits.index(steered[0]) if steered else 0
    a[1, first] = s
    mix = [0.7, -1.0, 0.4, -0.3, 0.9]
    for k, t in enumerate(steered or traits):
        a[2, traits.index(t)] = mix[k % len(mix)] * s
    return a


def sweep_plan(vcfg: Any, steered: list[str], run_max: float, traits: list[str]) -> SweepPlan:
    """The dose-response sweep a verify runs at budget `vcfg` for the `steered` traits."""
    return SweepPlan(traits=steered, coefficients=sweep_coefficients(vcfg.coefficients, run_max),
                     items_per_trait=vcfg.items_per_trait, n_random=vcfg.random_directions,
                     control_items=knob(vcfg, "control_items"),
                     likert_items=knob(vcfg, "likert_items"),
                     seed=knob(vcfg, "seed"), likert=knob(vcfg, "likert"),
                     cross=knob(vcfg, "cross_trait"), all_traits=traits)


def run_model_checks(run: RunDir, manifest: dict, backend: Any, vcfg: Any = None,
                     num_files: int = 0, progress: Any = None,
                     relabel: dict[str, str] | None = None) -> list[Check]:
    """All model-based checks for `run` on its loaded `backend` (see the module doc).

    `progress` (a `progress.Progress`) shows each stage with an ETA; `relabel` replays a
    control run known to have steered each trait's alpha with another trait's vector."""
    from steertown.config import VerificationConfig
    from steertown.verification.progress import Silent

    vcfg = vcfg if vcfg is not None else VerificationConfig()
    progress = progress or Silent()
    msgs = load_run_messages(run, num_files)
    alpha_cols = {t: np.array(msgs[f"alpha_{t}"], dtype=float) for t in TRAITS}
    steered = [t for t in backend.traits if np.nanmax(np.abs(alpha_cols[t]), initial=0) > 1e-9]
    run_max = max((float(np.nanmax(np.abs(alpha_cols[t]))) for t in steered), default=0.0)
    timings: dict[str, float] = {}
    checks: list[Check] = []

    t0 = time.perf_counter()
    alphas = mech_alphas(backend.traits, steered, run_max)
    with progress.stage("mechanistic", 2) as step:
        checks.append(check_residual(backend, alphas))
        step()
        checks.append(check_batch(backend, alphas))
        step()
    timings["mechanistic"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    plan = sweep_plan(vcfg, steered, run_max, list(backend.traits))
    with progress.stage("dose-response (held-out items)", 1) as step:
        result = run_sweep(backend, load_contrast_data(), plan, progress=step)
    checks += dose_checks(result, steered, vcfg)
    checks += control_checks(result, steered, vcfg)
    timings["dose_response"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with progress.stage("decisions in situ", knob(vcfg, "decision_samples")) as step:
        dchecks, decision_detail = decision_checks(run, backend, steered, vcfg, knob, relabel,
                                                   step)
    checks += dchecks
    timings["decisions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with progress.stage("in-run text", 1) as step:
        inrun = inrun_checks(backend, msgs, steered, vcfg.min_rho,
                             knob(vcfg, "messages_per_agent"), seed=knob(vcfg, "seed"))
        step()
    checks += inrun
    timings["inrun"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if knob(vcfg, "text_measure"):
        with progress.stage("text measure (MiniLM)", 1) as step:
            checks += independent_text_checks(msgs, steered, vcfg, result, inrun)
            step()
    timings["text"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if steered:
        with progress.stage("coherence", 1) as step:
            checks.append(check_coherence(backend, steered, run_max, vcfg))
            step()
    timings["coherence"] = time.perf_counter() - t0

    if not steered:
        checks.append(Check("dose.margin", None, False, "skipped",
                            detail="the run steers no trait (all logged alphas are 0)"))
    atomic_write_json(run.path / "verification" / "model_checks.json",
                      {"steered": steered, "run_max_alpha": run_max, "sweep": result.to_dict(),
                       "decisions": decision_detail,
                       "seconds": {k: round(v, 2) for k, v in timings.items()},
                       "layers": list(backend.layers)})
    checks.append(Check("model.cost", True, False,
                        f"model checks took {sum(timings.values()):.0f} s ("
                        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
                        + f"); {result.forward_tokens} tokens scored in the sweep",
                        data={f"{k}_seconds": v for k, v in timings.items()}))
    return checks
