"""The branched re-scoring of decisions equals the plain steered forward pass (real model).

`BranchScorer` computes the blocks below the first steered layer once per prompt, runs the
conditions of a decision as one batch above it, keeps an agent's system block (per
condition) for its next decision and skips the last block's unread positions. Each of
these must give the option probabilities of the plain path: the whole prompt plus the
option's tokens through the model, with the condition's vector added by the steering hook
at every position, renormalised over the option trie as at generation time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steertown.residual import added
from steertown.verification.branch import BranchScorer
from steertown.verification.decisions import Decision, option_paths, system_len

pytestmark = pytest.mark.model

# float32, CPU: the branched pass and the plain one differ only by summation order.
TOLERANCE = 1e-4  # |log-prob| difference; measured ~1e-6
SYSTEM = ("You are Ada, who lives in a small town. Each turn you answer with one line, for "
          "example:\nTalk Ben: hello\nMove park\nRest")
USERS = ["You are at the cafe. Here with you: Ben. Do you talk to Ben, or do something else?",
         "You are at home. Places next to you: park. What do you do?"]
OPTIONS = ("Talk Ben:", "Move park", "Work: I", "Rest")


@pytest.fixture(scope="module")
def backend():
    from tests.model_fixtures import shared_backend

    return shared_backend()


def conditions(backend) -> dict[int, torch.Tensor]:
    """[3, H] per steered layer: none, E at +1.5, a random direction of the same norm."""
    layer = min(backend.layers)
    e = backend.vectors.steering_matrix(layer)[backend.traits.index("E")].float()
    r = torch.randn(e.shape[0], generator=torch.Generator().manual_seed(5))
    rows = torch.stack([torch.zeros_like(e), 1.5 * e, r / r.norm() * 1.5 * e.norm()])
    return {lay: rows for lay in backend.layers}


@torch.no_grad()
def plain(backend, user: str, deltas: dict[int, torch.Tensor]) -> np.ndarray:
    """[C, options] the plain way: one full forward pass per (condition, option)."""
    prompt = backend.prompt_ids(SYSTEM, user)
    trie = backend._trie(OPTIONS)
    n_cond = next(iter(deltas.values())).shape[0]
    out = np.full((n_cond, len(OPTIONS)), -np.inf)
    for c in range(n_cond):
        for j, path in enumerate(option_paths(backend, OPTIONS)):
            if path is None:
                continue
            ids = torch.tensor([prompt + path[:-1]])
            with added(backend.model, {lay: d[c:c + 1] for lay, d in deltas.items()}):
                logits = backend.model(input_ids=ids, use_cache=False).logits[0].float()
            node, total = trie.root, 0.0
            for step, tok in enumerate(path):
                total += trie.logprob(logits[len(prompt) - 1 + step], node, tok)
                node = node.children[tok]
            out[c, j] = total
    return out


def branched(scorer: BranchScorer, backend, user: str, deltas) -> np.ndarray:
    d = Decision("a", 1, SYSTEM, user, OPTIONS, OPTIONS[0], 0.0, {})
    return scorer.option_logprobs(backend.prompt_ids(SYSTEM, user), OPTIONS,
                                  option_paths(backend, OPTIONS), backend._trie(OPTIONS),
                                  deltas, prefix_len=system_len(backend, d))


def test_branched_scoring_equals_the_plain_steered_pass(backend):
    deltas = conditions(backend)
    want = [plain(backend, u, deltas) for u in USERS]
    # Steering must matter here, or equality would prove nothing about the upper blocks.
    assert np.abs(want[0][1] - want[0][0]).max() > 100 * TOLERANCE
    scorer = BranchScorer(backend)
    first = branched(scorer, backend, USERS[0], deltas)
    cost_first = scorer.token_blocks
    # Same agent, next decision: the system block's upper blocks come from the first call.
    second = branched(scorer, backend, USERS[1], deltas)
    unshared = BranchScorer(backend, share=False)
    alone = branched(unshared, backend, USERS[1], deltas)
    assert scorer.token_blocks - cost_first < unshared.token_blocks  # the prefix was kept
    # A later call on the same prompt (other conditions) starts at the first steered layer.
    before = scorer.token_blocks
    again = branched(scorer, backend, USERS[0], {k: v[1:] for k, v in deltas.items()})
    prompt = backend.prompt_ids(SYSTEM, USERS[0])
    start = system_len(backend, Decision("a", 1, SYSTEM, USERS[0], OPTIONS, "", 0.0, {}))
    tree = BranchScorer._tree(prompt, [p for p in option_paths(backend, OPTIONS) if p], start)[0]
    upper = len(scorer.blocks) - min(backend.layers)
    assert scorer.token_blocks - before == 2 * len(tree) * upper  # upper blocks only
    for got, ref in [(first, want[0]), (second, want[1]), (again, want[0][1:]),
                     (alone, want[1])]:
        assert np.isfinite(ref).any()
        assert np.array_equal(np.isfinite(got), np.isfinite(ref))
        fin = np.isfinite(ref)
        assert np.abs(got[fin] - ref[fin]).max() <= TOLERANCE, (got, ref)
