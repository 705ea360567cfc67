"""In-run behaviour: do agents steered higher on a trait *say* more trait-like things?

For each agent, a capped sample of its logged messages is read back by the UNSTEERED
model (as an assistant reply after a neutral prompt); the agent's measure is the mean
activation over the reply tokens at the run's steered layer, projected onto the trait
direction. Spearman (agents' mean logged alpha vs measure) with an agent-bootstrap CI.

DESIGN measured that such a projection metric is weakly specific (random directions
often correlate too), so each trait's |rho| is ranked among the |rho| of 200 random
directions on the same activations (free: the forward passes are shared).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from steertown.config import TRAITS
from steertown.residual import captured, forward_until, left_pad, pad_id
from steertown.stats import bootstrap_ci, rank_percentile, spearman
from steertown.storage.run_dir import RunDir
from steertown.verification.check import Check
from steertown.verification.readouts import NEUTRAL_SYSTEM

READBACK_USER = "What do you do or say next?"
MAX_MESSAGE_TOKENS = 64
RANDOM_PROJECTIONS = 200
SMALL_RUN_AGENTS = 8


def load_run_messages(run: RunDir, num_files: int = 0) -> dict[str, list]:
    """The run's messages as columns (agent_id, content, alpha_*)."""
    cols = ["agent_id", "content"] + [f"alpha_{t}" for t in TRAITS]
    return run.read_table("messages", num_files).select(cols).to_pydict()


@torch.no_grad()
def tail_means(backend: Any, layer: int, prompts: list[list[int]], tails: list[list[int]],
               batch_size: int = 32) -> torch.Tensor:
    """[N, H] mean output of decoder `layer` over each row's tail tokens, unsteered."""
    pad = pad_id(backend.tokenizer)
    rows = []
    with captured(backend.model, [layer], stop=True) as got:
        for s in range(0, len(prompts), batch_size):
            seqs = [p + t for p, t in zip(prompts[s:s + batch_size], tails[s:s + batch_size],
                                          strict=True)]
            ids, mask, pos = left_pad(seqs, pad, backend.device)
            with backend.steered(None):
                forward_until(lambda ids=ids, mask=mask, pos=pos: backend.model(
                    input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False))
            width = ids.shape[1]
            for r, t in enumerate(tails[s:s + batch_size]):
                rows.append(got[layer][r, width - len(t):].mean(0).cpu())
    return torch.stack(rows)


def _sample(idx: list[int], k: int) -> list[int]:
    """Up to k indices spread evenly over the run (not just its first ticks)."""
    if len(idx) <= k:
        return idx
    return [idx[int(i)] for i in np.linspace(0, len(idx) - 1, k).round()]


def inrun_checks(backend: Any, msgs: dict[str, list], steered: list[str], min_rho: float,
                 per_agent: int = 6, seed: int = 0) -> list[Check]:
    """One informative check per steered trait (skipped when too few agents vary)."""
    if not steered:
        return []
    by_agent: dict[str, list[int]] = {}
    for i, (a, text) in enumerate(zip(msgs["agent_id"], msgs["content"], strict=True)):
        if text and text.strip():
            by_agent.setdefault(a, []).append(i)
    agents = sorted(by_agent)
    if len(agents) < 3:
        return [Check("inrun", None, False, "skipped",
                      detail=f"{len(agents)} agents with messages; need >= 3")]
    layer = backend.layers[len(backend.layers) // 2]
    prompt = backend.prompt_ids(NEUTRAL_SYSTEM, READBACK_USER)
    chosen = {a: _sample(by_agent[a], per_agent) for a in agents}
    flat = [i for a in agents for i in chosen[a]]
    tails = [backend.tokenizer(msgs["content"][i], add_special_tokens=False)["input_ids"]
             [:MAX_MESSAGE_TOKENS] or [0] for i in flat]
    acts = tail_means(backend, layer, [prompt] * len(flat), tails)
    owner = np.array([a for a in agents for _ in chosen[a]])
    per_agent_act = torch.stack([acts[torch.from_numpy(owner == a)].mean(0) for a in agents])
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(RANDOM_PROJECTIONS, per_agent_act.shape[1], generator=g)
    rand_proj = (per_agent_act @ (rand / rand.norm(dim=1, keepdim=True)).T).numpy()
    checks = []
    for t in steered:
        x = np.array([np.mean([msgs[f"alpha_{t}"][i] or 0.0 for i in by_agent[a]])
                      for a in agents])
        if np.ptp(x) < 1e-9:
            checks.append(Check(f"inrun.{t}", None, False, "skipped",
                                detail="all agents have the same coefficient"))
            continue
        y = (per_agent_act @ backend.vectors.direction(t, layer)).numpy()
        rho = spearman(x, y)
        lo, hi = bootstrap_ci(len(agents), lambda ix, x=x, y=y: spearman(x[ix], y[ix]), 500, seed)
        rand_rho = [abs(spearman(x, rand_proj[:, k])) for k in range(RANDOM_PROJECTIONS)]
        pct = rank_percentile(abs(rho), rand_rho)
        small = len(agents) < SMALL_RUN_AGENTS
        checks.append(Check(
            f"inrun.{t}", rho >= min_rho and pct >= 0.95, False,
            f"Spearman(agent alpha, layer-{layer} projection of what it said) {rho:+.2f} "
            f"(95% CI {lo:+.2f}..{hi:+.2f}), {len(agents)} agents x <= {per_agent} messages; "
            f"|rho| beats {100 * pct:.0f}% of {RANDOM_PROJECTIONS} random directions",
            detail="small run: too few agents for a firm answer" if small else "",
            data={"rho": rho, "ci_low": lo, "ci_high": hi, "agents": float(len(agents)),
                  "random_pct": pct}))
    return checks
