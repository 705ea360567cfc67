"""An independent text measure: what each agent said, scored by a model that was not steered.

Each trait's axis is the difference of the mean MiniLM embeddings of high-pole and
low-pole utterances (`verification/data/text_poles.json`, written for this measure and
never used to build the steering vectors). An agent's score is the mean projection of
its messages' embeddings (the free text of its actions and its reflections) on the axis.
Reported per trait: Spearman(agent coefficient, text score) with an agent-bootstrap CI,
next to the activation-projection measure of `inrun.py`, which reads the text back with
the steered model's own residual stream and projects it on the steering vectors.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np

from steertown.stats import bootstrap_ci, spearman
from steertown.verification.check import Check

MIN_AGENTS = 3


def load_poles() -> dict[str, dict[str, list[str]]]:
    """{trait: {"high": [...], "low": [...]}} from the packaged data file."""
    path = resources.files("steertown.verification") / "data" / "text_poles.json"
    return json.loads(path.read_text())["traits"]


def said(content: str) -> str:
    """The free text of a message: after the option's colon ("Talk Ben: hi" -> "hi");
    "" for replies that are only an option ("Move park", "Rest")."""
    head, sep, tail = content.partition(":")
    if sep and len(head.split()) <= 3:  # "Talk Ben", "Work": the option part
        return tail.strip()
    return "" if len(content.split()) <= 3 else content.strip()


def trait_axes(embedder: Any, traits: list[str]) -> dict[str, np.ndarray]:
    """Unit axis per trait: mean(high embeddings) - mean(low embeddings)."""
    poles = load_poles()
    out = {}
    for t in traits:
        hi = embedder.embed(poles[t]["high"]).mean(0)
        lo = embedder.embed(poles[t]["low"]).mean(0)
        d = hi - lo
        out[t] = d / np.linalg.norm(d)
    return out


def text_scores(embedder: Any, msgs: dict[str, list], traits: list[str]
                ) -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(agents, {trait: mean alpha per agent}, {trait: text score per agent})."""
    texts: dict[str, list[str]] = {}
    alphas: dict[str, list[int]] = {}
    for i, (a, c) in enumerate(zip(msgs["agent_id"], msgs["content"], strict=True)):
        s = said(c or "")
        if s:
            texts.setdefault(a, []).append(s)
            alphas.setdefault(a, []).append(i)
    agents = sorted(texts)
    if not agents:
        return [], {}, {}
    flat = [s for a in agents for s in texts[a]]
    emb = embedder.embed(flat)
    owner = np.array([a for a in agents for _ in texts[a]])
    mean_emb = np.stack([emb[owner == a].mean(0) for a in agents])
    axes = trait_axes(embedder, traits)
    x = {t: np.array([np.mean([msgs[f"alpha_{t}"][i] or 0.0 for i in alphas[a]])
                      for a in agents]) for t in traits}
    y = {t: mean_emb @ axes[t] for t in traits}
    return agents, x, y


def text_checks(embedder: Any, msgs: dict[str, list], steered: list[str], min_rho: float,
                inrun: dict[str, float] | None = None, seed: int = 0) -> list[Check]:
    """One informative check per steered trait: `text.<T>` (skipped when too few agents)."""
    if not steered:
        return []
    agents, x, y = text_scores(embedder, msgs, steered)
    if len(agents) < MIN_AGENTS:
        return [Check("text", None, False, "skipped",
                      detail=f"{len(agents)} agents said anything; need >= {MIN_AGENTS}")]
    checks = []
    for k, t in enumerate(steered):
        if np.ptp(x[t]) < 1e-9:
            checks.append(Check(f"text.{t}", None, False, "skipped",
                                detail="all agents have the same coefficient"))
            continue
        rho = spearman(x[t], y[t])
        lo, hi = bootstrap_ci(len(agents), lambda ix, a=x[t], b=y[t]: spearman(a[ix], b[ix]),
                              500, seed + k)
        side = "" if inrun is None or t not in inrun else \
            f"; activation projection (inrun) {inrun[t]:+.2f}"
        checks.append(Check(
            f"text.{t}", bool(rho >= min_rho and lo > 0), False,
            f"Spearman(agent {t} coefficient, MiniLM text score on held-out pole texts) "
            f"{rho:+.2f} (95% CI {lo:+.2f}..{hi:+.2f}), {len(agents)} agents{side}",
            data={"rho": rho, "ci_low": lo, "ci_high": hi, "agents": float(len(agents)),
                  **({"inrun_rho": inrun[t]} if inrun and t in inrun else {})}))
    return checks


def agreement_with_dose(dose_slopes: dict[str, float], measures: dict[str, dict[str, float]]
                        ) -> Check:
    """Which in-run measure ranks the traits like the dose-response slopes do?

    Spearman across traits between each measure's rho and the trait's margin slope
    (informative: five traits make a coarse ranking).
    """
    traits = [t for t in dose_slopes if all(t in m for m in measures.values())]
    if len(traits) < 3:
        return Check("text.agreement", None, False, "skipped",
                     detail=f"{len(traits)} traits with every measure; need >= 3")
    slopes = [dose_slopes[t] for t in traits]
    agree = {name: spearman(slopes, [m[t] for t in traits]) for name, m in measures.items()}
    best = max(agree, key=lambda n: agree[n])
    # Passes when some in-run measure ranks the traits the way the dose-response does.
    return Check("text.agreement", agree[best] > 0, False,
                 f"rank agreement across {len(traits)} traits with the dose-response slopes: "
                 + ", ".join(f"{n} {v:+.2f}" for n, v in agree.items()) + f"; closest: {best}",
                 data={f"{n}_vs_dose": v for n, v in agree.items()})
