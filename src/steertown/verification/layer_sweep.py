"""Which layer steers which trait best? Dose-response of CAA vectors at several layers.

Vectors for every layer come from one `load_or_compute` call with the whole layer list
(one cached file). Each (trait, layer) is steered alone at that layer with the run
calibration (alpha = 1 adds `unit[layer]` = 0.15 x the layer's median token norm), so
slopes are comparable across layers. Per layer, random directions of the same norm give
the control slope. Best layer per trait: the largest margin slope among layers whose
slope CI is above 0, curve monotone and slope above every random direction's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from steertown.steering.contrast_data import load_contrast_data
from steertown.steering.vectors import load_or_compute
from steertown.verification.dose_response import SweepPlan, run_sweep

DEFAULT_LAYERS = [8, 12, 16, 20, 24]


def layer_directions(backend: Any, layers: list[int], traits: list[str]
                     ) -> tuple[dict[str, dict[int, torch.Tensor]], Any]:
    """{"E@16": {16: vector}}: each trait's single-layer steering vector at each layer."""
    vec = load_or_compute(backend.model, backend.tokenizer, layers, load_contrast_data(),
                          backend.cfg.steering.vectors_dir, backend.loaded.model_id,
                          backend.loaded.dtype)
    dirs = {f"{t}@{layer}": {layer: vec.direction(t, layer) * vec.unit[layer]}
            for t in traits for layer in layers}
    return dirs, vec


def sweep_layers(backend: Any, layers: list[int], traits: list[str], items: int = 6,
                 coefficients: list[float] | None = None, n_random: int = 2,
                 seed: int = 0, progress: Callable[[str], None] | None = None) -> dict:
    """Dose-response per (trait, layer) plus random controls; returns a JSON-able dict.

    `progress` (e.g. print) gets one line per finished layer: a full sweep takes minutes.
    """
    coefs = sorted({float(c) for c in (coefficients or [-2.0, -1.0, 1.0, 2.0])} | {0.0})
    dirs, vec = layer_directions(backend, layers, traits)
    hidden = backend.model.config.hidden_size
    rows, seconds = [], 0.0
    for layer in layers:
        # Random controls at this layer, with the trait vectors' norm there.
        g = torch.Generator().manual_seed(seed + layer)
        rand = {}
        for k in range(n_random):
            v = torch.randn(hidden, generator=g)
            rand[f"R{k}@{layer}"] = {layer: v / v.norm() * vec.unit[layer]}
        plan = SweepPlan(traits=traits, coefficients=coefs, items_per_trait=items,
                         n_random=n_random, seed=seed, likert=False, cross=False,
                         all_traits=traits)
        res = run_sweep(backend, load_contrast_data(), plan, directions=dirs, random=rand,
                        trait_direction={t: f"{t}@{layer}" for t in traits})
        seconds += res.seconds
        for t, r in res.traits.items():
            m = r.margin
            rows.append({"trait": t, "layer": layer, "slope": m.slope, "ci_low": m.ci_low,
                         "ci_high": m.ci_high, "r2": m.r2, "rho": m.rho, "fd_slope": r.fd_slope,
                         "random_max": r.random_max, "vs_random": min(r.vs_random, 1e6),
                         "unit": vec.unit[layer]})
        if progress:
            progress(f"layer {layer}: " + ", ".join(
                f"{r['trait']} {r['slope']:+.2f} ({r['vs_random']:.1f}x random)"
                for r in rows if r["layer"] == layer) + f"  [{res.seconds:.0f} s]")
    return {"layers": layers, "traits": traits, "coefficients": coefs, "items": items,
            "random_directions": n_random, "rows": rows, "best": best_layers(rows),
            "seconds": round(seconds, 1), "vector_file": vec.meta.get("file")}


def best_layers(rows: list[dict], min_rho: float = 0.8, min_vs_random: float = 1.0
                ) -> dict[str, dict]:
    """Per trait, the layer with the largest margin slope among those that pass the gate
    (slope CI above 0, monotone, beats every random direction); None when none passes.

    Slopes are comparable across layers because alpha = 1 is the same fraction of each
    layer's median norm. The trait/random ratio only gates: with a couple of random
    directions it is too noisy to rank by (one near-zero random slope makes it huge).
    """
    best: dict[str, dict] = {}
    for t in dict.fromkeys(r["trait"] for r in rows):
        ok = sorted((r for r in rows if r["trait"] == t and r["ci_low"] > 0
                     and r["rho"] >= min_rho and r["vs_random"] > min_vs_random),
                    key=lambda r: (r["slope"], r["r2"]), reverse=True)
        best[t] = ({"layer": ok[0]["layer"], "slope": ok[0]["slope"],
                    "vs_random": ok[0]["vs_random"], "r2": ok[0]["r2"],
                    "runner_up": ok[1]["layer"] if len(ok) > 1 else None}
                   if ok else {"layer": None})
    return best


def format_table(result: dict) -> str:
    """Markdown: one row per (trait, layer); best layers marked."""
    lines = ["| trait | layer | margin slope | 95% CI | R^2 | rho | vs random | best |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        star = "**best**" if result["best"][r["trait"]].get("layer") == r["layer"] else ""
        lines.append(f"| {r['trait']} | {r['layer']} | {r['slope']:+.3f} | {r['ci_low']:+.3f}.."
                     f"{r['ci_high']:+.3f} | {r['r2']:.2f} | {r['rho']:+.2f} | "
                     f"{r['vs_random']:.1f}x | {star} |")
    return "\n".join(lines)


def write_outputs(result: dict, out: Path) -> tuple[Path, Path]:
    """`out` (.json) and the same name with .md."""
    out = out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    md = out.with_suffix(".md")
    best = ", ".join(f"{t}: L{b['layer']}" if b.get("layer") else f"{t}: none"
                     for t, b in result["best"].items())
    md.write_text(f"# Layer sweep\n\nBest layer per trait: {best}\n\n{format_table(result)}\n\n"
                  f"coefficients {result['coefficients']}, {result['items']} held-out situations "
                  f"per trait, {result['random_directions']} random directions per layer, "
                  f"{result['seconds']} s\n")
    return out, md
