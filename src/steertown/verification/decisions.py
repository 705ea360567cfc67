"""Decisions in situ: did each agent's steering change what it decided, in this run?

A sample of the run's own action decisions (every agent, spread over the run) is
re-scored, prefill only, under a few steerings of each decision (`branch.BranchScorer`:
the blocks below the first steered layer once, then all conditions as one batch). The
allowed options' probabilities are computed exactly as at generation time (raw logits
renormalised over the option trie), so re-scoring under the agent's own steering
reproduces the logged `option_logprob`.

Conditions per decision:
  own: the steering the row was generated with, as its `steering_mode` delivered it
       (trait vectors, the run's placebo basis, nothing for prompt and off)
  none
  vec:T+, vec:T-: halfway to the own steering, plus and minus trait T's CAA vector at c
       (`decision_coefficient`): the trait's axis where the own shift is linearised
  R<r>: `decision_random_directions` seeded random directions, each with the own
       steering's norm at every steered layer (fresh directions per decision)
  Rax<r>+, Rax<r>-: like vec:T+- with a random direction of the trait vectors' norm, the
       same for every decision of the run (as a placebo's directions are)

`decision_stats` turns them into the required checks `decisions.changed` and
`decisions.<T>`. The logged log-probability ties the re-scoring to what the run
generated: a decision whose logged value is not the own-steering replay was not
generated with that steering, so its own shift counts as 0, and the replay check fails.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from steertown.config import TRAITS
from steertown.residual import chat_ids
from steertown.stats import cluster_bootstrap_ci, total_variation
from steertown.storage.run_dir import RunDir
from steertown.storage.schema import option_class
from steertown.verification.branch import BranchScorer
from steertown.verification.check import Check
from steertown.verification.decision_stats import DecisionData, changed_check, trait_checks

AXIS_PREFIX = "vec:"  # conditions holding the true trait vectors (not the hooks)
RANDOM_AXIS = "Rax"  # conditions of a random direction's axis (trait vectors' norm)


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
    mode: str = "vectors"  # the row's steering_mode: how its alphas were delivered


def sample_decisions(run: RunDir, budget: int, seed: int = 0) -> list[Decision]:
    """Up to `budget` decisions, the same number per agent, evenly spread over each
    agent's ticks (all agents, not just the first ticks). Rows without a chosen option
    or log-probability (not constrained) are left out."""
    t = run.read_table("decisions").to_pydict()
    modes = t.get("steering_mode") or [None] * len(t["agent_id"])
    if not all(modes):  # rows of an older run: the mode its config gives (RunDir.config)
        modes = [m or run.config().steering.mode for m in modes]
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
                                {tr: float(t[f"alpha_{tr}"][i] or 0.0) for tr in TRAITS},
                                modes[i]))
    return out


def true_trait_matrix(backend: Any) -> dict[int, torch.Tensor]:
    """{layer: [T, H]} each trait's calibrated CAA vector per hooked layer, from the vector
    cache for this model, layers and contrast data (not from the hooks), so a run whose
    hooks carry other directions is judged against the real trait vectors."""
    vec = backend.vectors
    cfg, loaded = getattr(backend, "cfg", None), getattr(backend, "loaded", None)
    if cfg is not None and loaded is not None:
        from steertown.steering.contrast_data import load_contrast_data
        from steertown.steering.vectors import load_or_compute

        vec = load_or_compute(backend.model, backend.tokenizer, list(backend.layers),
                              load_contrast_data(), cfg.steering.vectors_dir, loaded.model_id,
                              loaded.dtype)
    return {layer: vec.steering_matrix(layer).float() for layer in backend.layers}


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


# A control run steered each trait's alpha with another trait's vector (the seed project's
# label-shuffle placebo): {trait: trait whose vector carried its alpha}. Cyclic E<-A<-...
CYCLIC_SHUFFLE = {"E": "A", "A": "C", "C": "O", "O": "N", "N": "E"}


def own_delta(backend: Any, d: Decision, placebo_seed: int | None,
              relabel: dict[str, str] | None = None) -> dict[int, torch.Tensor]:
    """{layer: [H]} what decision d's row added to the residual stream, as its mode
    delivered it: alphas @ trait vectors (vectors), @ the run's placebo basis (placebo),
    nothing (prompt, off: the logged alphas are only the dose). `relabel` replays a run
    known to have used another trait's vector for each alpha (a control)."""
    hidden = backend.model.config.hidden_size
    if d.mode not in ("vectors", "placebo"):
        return {layer: torch.zeros(hidden) for layer in backend.layers}
    traits = list(backend.traits)
    a = torch.zeros(len(traits))
    for t, v in d.alphas.items():
        if t in traits:
            a[traits.index(relabel.get(t, t) if relabel else t)] += v
    out = {}
    for layer in backend.layers:
        basis = backend.vectors.placebo_matrix(layer, placebo_seed) if d.mode == "placebo" \
            else backend.vectors.steering_matrix(layer)
        out[layer] = a @ basis.float()
    return out


@dataclasses.dataclass
class DecisionScores:
    """Log-probabilities of every sampled decision under every condition."""

    decisions: list[Decision]
    names: list[str]  # condition names, rows of each `logprobs` entry
    logprobs: list[np.ndarray]  # per decision [conditions, options]
    coef: float
    own_scale: list[float]  # per decision: the own steering's size in coefficient units
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
        """(p(mid + c v) - p(mid - c v)) / 2c of decision k along `direction`."""
        return (self.probs(k, f"{direction}+") - self.probs(k, f"{direction}-")) / (2 * self.coef)

    def data(self, traits: list[str]) -> DecisionData:
        """The numpy view `decision_stats` works on."""
        rand = [n for n in self.names if n.startswith("R") and not n.startswith(RANDOM_AXIS)]
        axes = sorted({n[:-1] for n in self.names if n.startswith(RANDOM_AXIS)})
        n = range(len(self.decisions))
        return DecisionData(
            agents=[d.agent_id for d in self.decisions],
            classes=[[option_class(o) for o in d.options] for d in self.decisions],
            alphas=[d.alphas for d in self.decisions],
            p_own=[self.probs(k, "own") for k in n], p_none=[self.probs(k, "none") for k in n],
            axes={t: [self.axis(k, f"{AXIS_PREFIX}{t}") for k in n] for t in traits},
            p_random=[[self.probs(k, r) for r in rand] for k in n],
            random_axes=[[self.axis(k, a) for a in axes] for k in n],
            applied=[self.applied(k) for k in n])


def rescore(backend: Any, decisions: list[Decision], traits: list[str], n_random: int,
            coef: float, seed: int = 0, tolerance: float = 1e-3, exact: bool = True,
            placebo_seed: int | None = None, relabel: dict[str, str] | None = None,
            progress: Any = None, only: tuple[str, ...] | None = None,
            scorer: BranchScorer | None = None) -> DecisionScores:
    """Score every decision under the conditions of the module doc (`only`: these
    conditions; the others' rows stay NaN, to be filled by a later call). `progress(n)`
    is told the number of conditions scored after each decision; `scorer`: a
    `BranchScorer` to reuse (it keeps each prompt's lower-block state for a later call)."""
    scorer = scorer or BranchScorer(backend)
    true = true_trait_matrix(backend)
    unit = {layer: float(v[0].norm()) for layer, v in true.items()}  # trait rows share a norm
    names = ["own", "none", *(f"{AXIS_PREFIX}{t}{sign}" for t in traits for sign in "+-"),
             *(f"R{r}" for r in range(n_random)),
             *(f"{RANDOM_AXIS}{r}{sign}" for r in range(n_random) for sign in "+-")]
    hidden = backend.model.config.hidden_size
    # Random axes: directions fixed over the run's decisions (as a placebo's are), so the
    # trait fit with them in a trait's place shows what chance alignment gives.
    g0 = torch.Generator().manual_seed(int(seed) + 7919)
    fixed = {layer: [unit[layer] * v / v.norm()
                     for v in (torch.randn(hidden, generator=g0) for _ in range(n_random))]
             for layer in backend.layers}
    out, scales = [], []
    for k, d in enumerate(decisions):
        own = own_delta(backend, d, placebo_seed, relabel)
        g = torch.Generator().manual_seed(int(seed) * 100003 + k)  # fresh per decision
        deltas = {}
        for layer in backend.layers:
            mid = own[layer] / 2  # axes are taken halfway to the agent's own steering
            rows = [own[layer], torch.zeros(hidden)]
            rows += [mid + sign * coef * true[layer][backend.traits.index(t)] for t in traits
                     for sign in (1, -1)]
            fresh = [torch.randn(hidden, generator=g) for _ in range(n_random)]
            rows += [v / v.norm() * own[layer].norm() for v in fresh]
            rows += [mid + sign * coef * fixed[layer][r] for r in range(n_random)
                     for sign in (1, -1)]
            deltas[layer] = torch.stack(rows)
        first = min(backend.layers)
        scales.append(float(own[first].norm()) / unit[first])
        pick = [i for i, name in enumerate(names) if only is None or name in only]
        lp = np.full((len(names), len(d.options)), np.nan)
        lp[pick] = scorer.option_logprobs(backend.prompt_ids(d.system, d.user), d.options,
                                          option_paths(backend, d.options),
                                          backend._trie(d.options),
                                          {layer: v[pick] for layer, v in deltas.items()},
                                          prefix_len=system_len(backend, d))
        out.append(lp)
        if progress is not None:
            progress(len(pick))
    return DecisionScores(decisions, names, out, coef, scales, tolerance, exact)


def system_len(backend: Any, d: Decision) -> int:
    """Tokens of d's prompt that are its system block (the agent's persona and rules: the
    same in all its decisions, so the scorer computes them once per agent and steering);
    0 when the chat template does not put the system block first."""
    system = chat_ids(backend.tokenizer, d.system)
    prompt = backend.prompt_ids(d.system, d.user)
    return len(system) if prompt[:len(system)] == system else 0


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



def decision_checks(run: RunDir, backend: Any, steered: list[str], vcfg: Any, knob: Any,
                    relabel: dict[str, str] | None = None,
                    progress: Any = None) -> tuple[list[Check], dict]:
    """The in-situ decision checks of a run, and the numbers behind them (for JSON).

    `relabel`: replay a control run known to have steered each trait's alpha with another
    trait's vector ({trait: vector used}); `progress(n=1, total=None)`: told the work
    (decisions x conditions), then the conditions scored after each decision.
    """
    decisions = sample_decisions(run, knob(vcfg, "decision_samples"), knob(vcfg, "seed"))
    if not decisions:
        return [Check("decisions", None, True, "not verified",
                      detail="the run has no logged decisions (older or imported run)")], {}
    exact = backend.describe().get("dtype") == "float32"
    tol = knob(vcfg, "replay_tolerance") * (1 if exact else 50)
    placebo = run_placebo_seed(run)
    args = (backend, decisions, steered, knob(vcfg, "decision_random_directions"),
            knob(vcfg, "decision_coefficient"), knob(vcfg, "seed"), tol, exact, placebo, relabel)
    scorer = BranchScorer(backend)  # keeps each prompt's lower blocks for the second call
    n_cond = 2 + 2 * len(steered) + 3 * knob(vcfg, "decision_random_directions")
    if progress is not None:
        progress(0, total=len(decisions) * n_cond)
    # Own and none first: a run whose logged decisions are not its own-steering replay, or
    # whose steering never reached the residual stream (prompt, off), fails without the
    # other conditions (the sabotaged runs verify in a fraction of the time).
    scores = rescore(*args, only=("own", "none"), progress=progress, scorer=scorer)
    checks = [replay_check(scores)]
    no_own = all(s == 0 for s in scores.own_scale)
    seed = knob(vcfg, "seed")
    tv = np.array([total_variation(scores.probs(k, "own"), scores.probs(k, "none"))
                   for k in range(len(decisions))])
    tv_high = cluster_bootstrap_ci([d.agent_id for d in decisions],
                                   lambda ix: float(tv[ix].mean()), seed=seed)[1]
    too_small = not tv_high > knob(vcfg, "min_changed")
    if not checks[0].passed or no_own or too_small:
        why = ("the logged decisions are not the own-steering replay" if not checks[0].passed
               else "no decision's steering reached the residual stream (mode "
               + "/".join(sorted({d.mode for d in decisions})) + ")" if no_own
               else f"steering changed too little: mean TV(own, none) {tv.mean():.4f}, CI "
                    f"high {tv_high:.4f} <= the minimum effect {knob(vcfg, 'min_changed'):g}")
        checks += [Check(name, False, True, "not scored further: " + why)
                   for name in ["decisions.changed", *(f"decisions.{t}" for t in steered)]]
    else:
        rest = tuple(n for n in scores.names if n not in ("own", "none"))
        more = rescore(*args, progress=progress, only=rest, scorer=scorer)
        scores.logprobs = [np.where(np.isnan(a), b, a)
                           for a, b in zip(scores.logprobs, more.logprobs, strict=True)]
        data = scores.data(steered)
        checks.append(changed_check(data, knob(vcfg, "min_changed"), seed=seed))
        if steered:
            checks += trait_checks(data, steered, seed=seed)
    detail = {"conditions": scores.names, "coefficient": scores.coef,
              "decisions": [{"agent_id": d.agent_id, "tick": d.tick, "options": list(d.options),
                             "chosen": d.chosen, "logged_logprob": d.logprob, "mode": d.mode,
                             "alphas": d.alphas, "own_scale": s,
                             "logprobs": [[float(v) if np.isfinite(v) else None for v in row]
                                          for row in lp]}
                            for d, lp, s in zip(decisions, scores.logprobs, scores.own_scale,
                                                strict=True)]}
    return checks, detail


def run_placebo_seed(run: RunDir) -> int:
    """The run's placebo basis seed (fixed by the run's seed, which a fork keeps)."""
    from steertown.steering.modes import placebo_seed

    return placebo_seed(run.config().seed)
