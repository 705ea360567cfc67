"""Decisions in situ: did each agent's steering change what it decided, in this run?

A sample of the run's own action decisions (every agent, spread over the run) is
re-scored, prefill only and batched, under several steerings. For each decision the
allowed options' probabilities are computed exactly as at generation time: raw logits,
renormalised over the tokens the option trie allows at each step (`OptionTrie.logprob`),
so re-scoring under the agent's own steering reproduces the logged `option_logprob`.

Conditions per decision:
  (a) own: the steering the agent had (through the backend's hooks: what the run applied)
  (b) none
  (c) each steered trait's CAA vector alone at +-c (c = `decision_coefficient`)
  (d) `random_directions` seeded random directions of the same norm at +-c

Per decision, a direction's *axis* is the finite-difference change of the option
probabilities, (p(+c) - p(-c)) / 2c; the agent's *own shift* is p(a) - p(b). Per agent,
the own shift over its sampled decisions is decomposed on the steered traits' axes by
least squares: the coordinate on trait t's axis is how much of trait t the agent's
decisions express (an oblique projection, so traits whose axes overlap do not leak into
each other). Required per steered trait: Spearman across agents of (coefficient,
coordinate) with a bootstrap CI above 0, and above the same statistic with each random
direction's axis in place of the trait's.

The logged log-probability ties the re-scoring to what the run generated: a decision
whose logged value is not the own-steering replay was not generated with that steering,
so its own shift counts as 0 (the steering changed nothing there), and the replay check
fails. A run that logged alphas but generated unsteered fails both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from steertown.config import TRAITS
from steertown.storage.run_dir import RunDir
from steertown.storage.schema import option_class
from steertown.verification.check import Check
from steertown.verification.readouts import UNSTEERED, Scorer, Steer, norm_steer
from steertown.stats import bootstrap_ci, spearman

AXIS_PREFIX = "vec:"  # extra directions holding the true trait vectors (not the hooks)


@dataclasses.dataclass
class Decision:
    """One logged action decision (a row of the decisions table)."""

    agent_id: str
    tick: int
    system: str
    user: str
    options: tuple[str, ...]
    chosen: str
    logprob: float
    alphas: dict[str, float]


def sample_decisions(run: RunDir, budget: int, seed: int = 0) -> list[Decision]:
    """Up to `budget` decisions, the same number per agent, evenly spread over each
    agent's ticks (all agents, not just the first ticks). Rows without a chosen option
    or log-probability (not constrained) are left out."""
    t = run.read_table("decisions").to_pydict()
    by_agent: dict[str, list[int]] = {}
    for i, (a, ch, lp) in enumerate(zip(t["agent_id"], t["chosen_option"], t["option_logprob"],
                                        strict=True)):
        if ch and lp is not None and np.isfinite(lp):
            by_agent.setdefault(a, []).append(i)
    if not by_agent:
        return []
    per = max(1, budget // len(by_agent))
    out = []
    for a in sorted(by_agent):
        idx = sorted(by_agent[a], key=lambda i: (t["tick"][i], t["event_id"][i]))
        if len(idx) > per:
            idx = [idx[int(k)] for k in np.linspace(0, len(idx) - 1, per).round()]
        for i in idx:
            out.append(Decision(a, t["tick"][i], t["system"][i], t["user"][i],
                                tuple(t["options"][i]), t["chosen_option"][i],
                                float(t["option_logprob"][i]),
                                {tr: float(t[f"alpha_{tr}"][i] or 0.0) for tr in TRAITS}))
    return out


def true_trait_directions(backend: Any) -> dict[str, dict[int, torch.Tensor]]:
    """{"vec:E": {layer: vector}}: each trait's calibrated CAA vector, per hooked layer.

    Taken from the vector cache for this model, layers and contrast data (not from the
    hooks), so a run whose hooks carry other directions (placebo) is judged against the
    real trait vectors.
    """
    vec = backend.vectors
    cfg, loaded = getattr(backend, "cfg", None), getattr(backend, "loaded", None)
    if cfg is not None and loaded is not None:
        from steertown.steering.contrast_data import load_contrast_data
        from steertown.steering.vectors import load_or_compute

        vec = load_or_compute(backend.model, backend.tokenizer, list(backend.layers),
                              load_contrast_data(), cfg.steering.vectors_dir, loaded.model_id,
                              loaded.dtype)
    return {f"{AXIS_PREFIX}{t}": {layer: vec.steering_matrix(layer)[k]
                                  for layer in backend.layers}
            for k, t in enumerate(vec.traits)}


def option_paths(backend: Any, options: tuple[str, ...]) -> list[list[int] | None]:
    """Each option's token path through the backend's trie; None when the option can
    never be generated (a shorter option is a token prefix of it: the shortest wins)."""
    trie = backend._trie(options)
    out: list[list[int] | None] = []
    for opt in options:
        ids = list(backend.tokenizer(opt, add_special_tokens=False)["input_ids"])
        node, ok = trie.root, True
        for s, tok in enumerate(ids):
            node = node.children[tok]
            if node.option is not None and (node.option != opt or s != len(ids) - 1):
                ok = False
                break
        out.append(ids if ok else None)
    return out


def score_options(scorer: Scorer, decisions: list[Decision],
                  steers: list[list[Steer]]) -> list[np.ndarray]:
    """Per decision, [conditions, options] log-probabilities (-inf: unreachable option)."""
    b = scorer.b
    paths = [option_paths(b, d.options) for d in decisions]
    tries = [b._trie(d.options) for d in decisions]
    out = [np.full((len(steers[k]), len(d.options)), -np.inf) for k, d in enumerate(decisions)]
    prompts, row_steers, tails, owner = [], [], [], []
    for k, d in enumerate(decisions):
        ids = b.prompt_ids(d.system, d.user)
        reach = [j for j, p in enumerate(paths[k]) if p is not None]
        for c, st in enumerate(steers[k]):
            prompts.append(ids)
            row_steers.append(norm_steer(st))
            tails.append([paths[k][j] for j in reach])
            owner.append((k, c, reach))

    def trie_logprob(i: int, j: int, logits: torch.Tensor) -> None:
        k, c, reach = owner[i]
        trie, node, total = tries[k], tries[k].root, 0.0
        for s, tok in enumerate(tails[i][j]):
            total += trie.logprob(logits[s].cpu(), node, tok)  # as at generation time
            node = node.children[tok]
        out[k][c, reach[j]] = total

    scorer.tail_logits(prompts, row_steers, tails, trie_logprob)
    return out


PLACEBO_PREFIX = "placebo:"  # extra directions: a placebo run's basis, per trait


def own_steer(d: Decision, delivery: str = "vectors") -> Steer:
    """The steering decision `d` was generated with, as the run delivered its dose:
    on the trait hooks (vectors), on the run's placebo basis (placebo), or not through
    the residual stream at all (prompt, off: the logged alphas are only the dose)."""
    if delivery not in ("vectors", "placebo"):
        return UNSTEERED
    prefix = PLACEBO_PREFIX if delivery == "placebo" else ""
    return norm_steer(tuple((prefix + t, a) for t, a in d.alphas.items() if a != 0))


def run_delivery(manifest: dict) -> tuple[str, int | None]:
    """(steering mode, placebo seed or None) of a run, from its manifest's config."""
    st = (manifest.get("config") or {}).get("steering") or {}
    mode = st.get("mode", "vectors" if st.get("enabled", True) else "off")
    if mode == "placebo":
        from steertown.steering.modes import placebo_seed

        return mode, placebo_seed(int((manifest.get("config") or {}).get("seed", 0)))
    return str(mode), None


@dataclasses.dataclass
class DecisionScores:
    """Probabilities of every sampled decision under every condition."""

    decisions: list[Decision]
    names: list[str]  # condition names, columns of `probs`
    logprobs: list[np.ndarray]  # per decision [conditions, options]
    coef: float
    tolerance: float = 1e-3  # replay: |logged - re-scored| log-prob that counts as equal
    exact: bool = True  # float32: a replay is exact; other dtypes drift with padding

    def replayed(self, k: int, name: str) -> float:
        """Re-scored log-prob of decision k's chosen option under condition `name`."""
        d = self.decisions[k]
        return float(self.logprobs[k][self.names.index(name)][d.options.index(d.chosen)])

    def applied(self, k: int) -> bool:
        """Whether the logged decision was generated with the agent's own steering: its
        logged log-prob is the own-steering replay (within the tolerance, or at least
        closer to it than to the unsteered replay: bfloat16 rows drift with padding)."""
        logged = self.decisions[k].logprob
        own = abs(self.replayed(k, "own") - logged)
        return own <= self.tolerance or own < abs(self.replayed(k, "none") - logged)

    def probs(self, k: int, name: str) -> np.ndarray:
        return np.exp(self.logprobs[k][self.names.index(name)])

    def axis(self, k: int, direction: str) -> np.ndarray:
        """(p(+c) - p(-c)) / 2c of decision k along `direction`."""
        return (self.probs(k, f"{direction}+") - self.probs(k, f"{direction}-")) / (2 * self.coef)

    def own_shift(self, k: int) -> np.ndarray:
        """p(own) - p(none) where the run applied the steering; 0 where the logged
        decision shows it did not (the steering changed nothing the agent did there)."""
        if not self.applied(k):
            return np.zeros(len(self.decisions[k].options))
        return self.probs(k, "own") - self.probs(k, "none")


def rescore(backend: Any, decisions: list[Decision], traits: list[str], n_random: int,
            coef: float, seed: int = 0, tolerance: float = 1e-3, exact: bool = True,
            delivery: str = "vectors", placebo_seed: int | None = None) -> DecisionScores:
    """Score every decision under (a) own, (b) none, (c) traits at +-coef, (d) randoms.

    `delivery` is the run's steering mode: (a) replays what the run applied (the trait
    hooks, the placebo basis of `placebo_seed`, or nothing in prompt and off mode).
    """
    from steertown.verification.readouts import random_directions

    rand = random_directions(backend, n_random, seed)
    extra = {**true_trait_directions(backend), **rand}
    if delivery == "placebo":
        extra.update({f"{PLACEBO_PREFIX}{t}": {
            layer: backend.vectors.placebo_matrix(layer, placebo_seed)[k]
            for layer in backend.layers} for k, t in enumerate(backend.traits)})
    scorer = Scorer(backend, extra)
    names = ["own", "none"]
    dirs = [f"{AXIS_PREFIX}{t}" for t in traits] + list(rand)
    for direction in dirs:
        names += [f"{direction}+", f"{direction}-"]
    steers = []
    for d in decisions:
        row: list[Steer] = [own_steer(d, delivery), UNSTEERED]
        for direction in dirs:
            row += [(direction, coef), (direction, -coef)]
        steers.append(row)
    return DecisionScores(decisions, names, score_options(scorer, decisions, steers), coef,
                          tolerance, exact)


MAX_CLOSER_TO_UNSTEERED = 0.2  # inexact dtypes: share of steered decisions allowed


def replay_check(scores: DecisionScores) -> Check:
    """Logged option_logprob == re-scored under the agent's own steering, per decision.

    float32 (exact): every decision within the tolerance. Other dtypes, where a row's
    logits drift with its batch's padding: the median within the tolerance, and at most
    20% of the decisions where steering matters closer to the unsteered re-score (a run
    that generated unsteered has nearly all of them there).
    """
    diffs, closer_to_none, steered = [], 0, 0
    tolerance = scores.tolerance
    for k, d in enumerate(scores.decisions):
        own, none = scores.replayed(k, "own"), scores.replayed(k, "none")
        diffs.append(abs(own - d.logprob))
        if abs(own - none) > tolerance:  # steering mattered for this decision
            steered += 1
            closer_to_none += abs(none - d.logprob) < abs(own - d.logprob)
    worst = float(max(diffs)) if diffs else float("nan")
    median = float(np.median(diffs)) if diffs else float("nan")
    if scores.exact:
        ok = bool(diffs) and worst <= tolerance
        rule = f"every decision within {tolerance:.0e} (float32: exact)"
    else:
        ok = bool(diffs) and median <= tolerance and \
            closer_to_none <= MAX_CLOSER_TO_UNSTEERED * max(steered, 1)
        rule = (f"median within {tolerance:.0e} and <= {MAX_CLOSER_TO_UNSTEERED:.0%} closer "
                "to unsteered (not float32: rows drift with padding)")
    return Check(
        "decisions.replay", ok, True,
        f"re-scoring {len(diffs)} logged decisions under the agent's own steering gives the "
        f"logged log-probability of the chosen option within {worst:.1e} (median "
        f"{median:.1e}); logged value closer to the UNSTEERED re-score in {closer_to_none}"
        f"/{steered} decisions where steering matters; rule: {rule}",
        data={"max_abs_diff": worst, "median_abs_diff": median, "decisions": float(len(diffs)),
              "closer_to_unsteered": float(closer_to_none), "steered_decisions": float(steered)})


def agent_coordinates(scores: DecisionScores, axes: dict[str, str]) -> tuple[list[str], dict]:
    """Per agent, least-squares coordinates of its own shift on the given axes.

    `axes` maps a label to a direction name. Returns (agents, {label: array over agents}).
    """
    by_agent: dict[str, list[int]] = {}
    for k, d in enumerate(scores.decisions):
        by_agent.setdefault(d.agent_id, []).append(k)
    agents = sorted(by_agent)
    coords = {label: np.zeros(len(agents)) for label in axes}
    for n, a in enumerate(agents):
        ks = by_agent[a]
        y = np.concatenate([scores.own_shift(k) for k in ks])
        basis = np.stack([np.concatenate([scores.axis(k, axes[label]) for k in ks])
                          for label in axes], 1)
        beta = np.linalg.lstsq(basis, y, rcond=None)[0]
        for m, label in enumerate(axes):
            coords[label][n] = beta[m]
    return agents, coords


def class_shifts(scores: DecisionScores, direction: str, n_boot: int, seed: int) -> dict:
    """{class: (mean, ci_low, ci_high)}: change of P(class) per unit coefficient along
    `direction`, averaged over the decisions where the class was offered."""
    per_class: dict[str, list[float]] = {}
    for k, d in enumerate(scores.decisions):
        ax = scores.axis(k, direction)
        classes = [option_class(o) for o in d.options]
        for c in dict.fromkeys(classes):
            per_class.setdefault(c, []).append(
                float(sum(v for v, oc in zip(ax, classes, strict=True) if oc == c)))
    out = {}
    for c, vals in sorted(per_class.items()):
        v = np.array(vals)
        lo, hi = bootstrap_ci(len(v), lambda ix, v=v: float(v[ix].mean()), n_boot, seed)
        out[c] = (float(v.mean()), lo, hi)
    return out


def trait_checks(scores: DecisionScores, traits: list[str], n_random: int, n_boot: int = 1000,
                 seed: int = 0) -> list[Check]:
    """One required check per steered trait (see the module doc)."""
    axes = {t: f"{AXIS_PREFIX}{t}" for t in traits}
    agents, coords = agent_coordinates(scores, axes)
    first = {}
    for d in scores.decisions:
        first.setdefault(d.agent_id, d.alphas)
    checks = []
    for k, t in enumerate(traits):
        x = np.array([first[a][t] for a in agents])
        y = coords[t]
        if len(agents) < 3 or np.ptp(x) < 1e-9:
            checks.append(Check(f"decisions.{t}", False, True, "not enough variation",
                                detail=f"{len(agents)} agents; the coefficient of {t} must vary"))
            continue
        rho = spearman(x, y)
        lo, hi = bootstrap_ci(len(agents), lambda ix, x=x, y=y: spearman(x[ix], y[ix]),
                              n_boot, seed + k)
        rand_rho = []
        for r in range(n_random):
            swapped = {**axes, t: f"R{r}"}
            _, rc = agent_coordinates(scores, swapped)
            rand_rho.append(spearman(x, rc[t]))
        best_random = max(rand_rho)
        ok = lo > 0 and rho > best_random
        shifts = class_shifts(scores, axes[t], n_boot, seed + k)
        checks.append(Check(
            f"decisions.{t}", ok, True,
            f"Spearman(agent {t} coefficient, its decisions' shift along the {t} axis) "
            f"{rho:+.2f} (95% CI {lo:+.2f}..{hi:+.2f}), {len(agents)} agents x "
            f"{len(scores.decisions) / len(agents):.1f} decisions; best of {n_random} random "
            f"axes {best_random:+.2f}; P(class) per unit {t}: "
            + ", ".join(f"{c} {m:+.3f} [{a:+.3f}..{b:+.3f}]" for c, (m, a, b) in shifts.items()),
            data={"rho": rho, "ci_low": lo, "ci_high": hi, "random_max": best_random,
                  "agents": float(len(agents)),
                  **{f"shift_{c}": m for c, (m, _, _) in shifts.items()},
                  **{f"shift_{c}_ci_low": a for c, (_, a, _) in shifts.items()},
                  **{f"shift_{c}_ci_high": b for c, (_, _, b) in shifts.items()}}))
    return checks


def decision_checks(run: RunDir, backend: Any, steered: list[str], vcfg: Any,
                    knob: Any) -> tuple[list[Check], dict]:
    """The in-situ decision checks of a run, and the numbers behind them (for JSON)."""
    decisions = sample_decisions(run, knob(vcfg, "decision_samples"), knob(vcfg, "seed"))
    if not decisions:
        return [Check("decisions", None, True, "not verified",
                      detail="the run has no logged decisions (older or imported run)")], {}
    n_random = knob(vcfg, "random_directions")
    exact = backend.describe().get("dtype") == "float32"
    tol = knob(vcfg, "replay_tolerance") * (1 if exact else 50)
    delivery, placebo = run_delivery(run.read_manifest())
    scores = rescore(backend, decisions, steered, n_random, knob(vcfg, "decision_coefficient"),
                     knob(vcfg, "seed"), tol, exact, delivery, placebo)
    checks = [replay_check(scores)]
    if steered:
        checks += trait_checks(scores, steered, n_random, seed=knob(vcfg, "seed"))
    detail = {"conditions": scores.names, "coefficient": scores.coef,
              "decisions": [{"agent_id": d.agent_id, "tick": d.tick, "options": list(d.options),
                             "chosen": d.chosen, "logged_logprob": d.logprob,
                             "logprobs": np.where(np.isfinite(lp), lp, None).tolist()}
                            for d, lp in zip(decisions, scores.logprobs, strict=True)]}
    return checks, detail
