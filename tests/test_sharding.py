"""Multi-GPU plan: sharding a batch across replica backends gives the single-backend results."""

from __future__ import annotations

import random
import threading

import pytest

from steertown.inference.backend import GenerationRequest
from steertown.inference.batching import generate_all
from steertown.inference.mock import MockBackend
from steertown.inference.sharding import (
    POLICIES,
    ShardedBackend,
    ShardingError,
    assign_runs,
    gpu_worker_envs,
    make_sharded,
    merge_in_order,
    plan_replicas,
    split_indices,
)


def _requests(n: int, seed: int = 0) -> list[GenerationRequest]:
    rng = random.Random(seed)
    names = ["Ada", "Bo", "Cy", "Di", "Ed"]
    out = []
    for i in range(n):
        here = ", ".join(rng.sample(names, rng.randint(0, 3)))
        user = (f"You are at the cafe. Places next to you: park, library. "
                f"Here with you: {here or 'nobody'}. " + "filler " * rng.randint(0, 40))
        out.append(GenerationRequest(
            request_id=f"t1-a{i}", system=f"You are agent {i}.", user=user,
            steering={t: rng.uniform(-1, 1) for t in "EACON"}, max_new_tokens=rng.randint(8, 48),
            seed=1000 + i, kind="reflection" if i % 7 == 0 else "action"))
    return out


class RecordingMock(MockBackend):
    """A mock replica that records which requests and threads it served."""

    def __init__(self, layers, device):
        super().__init__(layers)
        self.device = device
        self.seen: list[str] = []
        self.threads: set[str] = set()

    def describe(self) -> dict:
        return {**super().describe(), "device": self.device}

    def generate_batch(self, requests):
        self.seen.extend(r.request_id for r in requests)
        self.threads.add(threading.current_thread().name)
        return super().generate_batch(requests)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_sharded_equals_single(policy, replicas):
    reqs = _requests(23)
    single = MockBackend([16]).generate_batch(reqs)
    reps = [RecordingMock([16], f"cuda:{i}") for i in range(replicas)]
    sharded = ShardedBackend(reps, policy)
    got = sharded.generate_batch(reqs)
    assert got == single
    assert sorted(i for r in reps for i in r.seen) == sorted(r.request_id for r in reqs)
    assert all(r.seen for r in reps)  # every replica did work
    sharded.close()


def test_sharded_through_batcher_and_small_batches():
    """The tick batcher (length-sorted batches, any batch size) on top of the sharded backend."""
    reqs = _requests(40, seed=3)
    single = generate_all(MockBackend([12, 16]), reqs, batch_size=16)
    for batch_size in (1, 2, 7, 16, 64):
        sharded = ShardedBackend([MockBackend([12, 16]) for _ in range(4)], "contiguous")
        assert generate_all(sharded, reqs, batch_size) == single
        assert sharded.generate_batch([]) == []
        sharded.close()


def test_sharded_describe_and_protocol():
    reps = [RecordingMock([16], f"cuda:{i}") for i in range(2)]
    b = ShardedBackend(reps)
    assert b.name == "mock" and b.layers == [16]
    d = b.describe()
    assert d["replicas"] == 2 and d["replica_devices"] == ["cuda:0", "cuda:1"]
    r = _requests(1)[0]
    assert b.count_prompt_tokens(r) == reps[0].count_prompt_tokens(r)
    assert make_sharded(lambda dev: RecordingMock([16], dev), ["cpu"]).describe()["device"] == "cpu"
    assert isinstance(make_sharded(lambda dev: RecordingMock([16], dev), ["cuda:0", "cuda:1"]),
                      ShardedBackend)


def test_replica_error_propagates():
    class Failing(MockBackend):
        def generate_batch(self, requests):
            raise RuntimeError("CUDA out of memory")

    b = ShardedBackend([MockBackend([16]), Failing([16])], "round_robin")
    with pytest.raises(RuntimeError, match="out of memory"):
        b.generate_batch(_requests(4))


@pytest.mark.parametrize("policy", POLICIES)
def test_split_indices_partition(policy):
    rng = random.Random(1)
    for n in range(0, 30):
        costs = [rng.randint(1, 100) for _ in range(n)]
        for k in (1, 2, 3, 8):
            shards = split_indices(costs, k, policy)
            assert len(shards) == k
            flat = sorted(i for s in shards for i in s)
            assert flat == list(range(n))
            assert all(s == sorted(s) for s in shards)
            assert sum(1 for s in shards if s) == min(n, k)  # no shard idle while rows wait


def test_split_indices_balance_and_contiguity():
    costs = [10] * 12
    assert split_indices(costs, 3, "contiguous") == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert split_indices(costs, 3, "round_robin")[0] == [0, 3, 6, 9]
    sorted_costs = sorted(random.Random(2).randint(50, 400) for _ in range(32))
    for policy in ("contiguous", "balanced"):
        loads = [sum(sorted_costs[i] for i in s) for s in split_indices(sorted_costs, 4, policy)]
        assert max(loads) <= 1.25 * sum(sorted_costs) / 4, (policy, loads)
    with pytest.raises(ShardingError, match="allowed"):
        split_indices(costs, 2, "random")


def test_merge_in_order_checks():
    assert merge_in_order([[0, 2], [1]], [["a", "c"], ["b"]], 3) == ["a", "b", "c"]
    with pytest.raises(RuntimeError):
        merge_in_order([[0, 2], [1]], [["a"], ["b"]], 3)


def test_plan_replicas_and_worker_envs():
    assert plan_replicas(0) == ["cpu"]
    assert plan_replicas(2) == ["cuda:0", "cuda:1"]
    # 80 GB GPUs, a 0.5 GB model: capped by max_replicas_per_gpu
    assert plan_replicas(2, 80, 0.5, max_replicas_per_gpu=2) == ["cuda:0", "cuda:0", "cuda:1",
                                                               "cuda:1"]
    assert plan_replicas(1, 16, 6, reserve_gb=2, max_replicas_per_gpu=8) == ["cuda:0", "cuda:0"]
    with pytest.raises(ShardingError, match="quantization"):
        plan_replicas(1, 8, 14)
    with pytest.raises(ShardingError):
        plan_replicas(-1)
    assert gpu_worker_envs(2) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpu_worker_envs(2, 2)] == ["0", "0", "1", "1"]
    assert assign_runs(["a", "b", "c"], 2) == [["a", "c"], ["b"]]


@pytest.mark.model
def test_sharded_real_replicas_give_verification_what_it_needs():
    """Two real CPU replicas: generation equals one replica's, and what verification and
    preflight read (traits, vectors, prompt_ids, hidden_at, steered, describe) works
    through the sharded backend, from its first replica."""
    import torch

    from steertown.inference.transformers_backend import TransformersBackend
    from steertown.preflight import preflight
    from tests.model_fixtures import real_cfg, shared_backend

    one = shared_backend()
    sharded = ShardedBackend([one, TransformersBackend(real_cfg())], "round_robin")
    try:
        reqs = [GenerationRequest(f"r{i}", "You are Ada, who lives in town.",
                                  f"It is morning at the {place}. What do you do next?",
                                  {"E": e, "N": -e}, max_new_tokens=6, seed=100 + i)
                for i, (place, e) in enumerate([("cafe", 1.0), ("park", -1.0),
                                                ("library", 0.5), ("square", 0.0)])]
        got = sharded.generate_batch(reqs)
        want = one.generate_batch(reqs)
        assert [(g.text, g.tokens_out) for g in got] == [(w.text, w.tokens_out) for w in want]
        assert sharded.traits == one.traits and sharded.vectors is one.vectors
        ids = sharded.prompt_ids("You are Ada.", "Say hello.")
        assert ids == one.prompt_ids("You are Ada.", "Say hello.")
        alphas = [{"E": 2.0}]
        with sharded.steered(None):  # the verification's context manager, unsteered
            plain = sharded.hidden_at(16, [ids])[0]
        steered = sharded.hidden_at(16, [ids], alphas)[0]
        # layer 16's output moved by exactly 2 * v_E at every position (the hook's addition)
        v_e = one.vectors.steering_matrix(16)[one.traits.index("E")].float()
        torch.testing.assert_close(steered - plain, (2.0 * v_e).expand_as(plain),
                                   rtol=1e-4, atol=1e-3)
        d = sharded.describe()
        assert d["replicas"] == 2 and d["dtype"] == "float32"
        found = {f["check"]: f for f in preflight(one.cfg, sharded)}
        assert found["device"]["status"] == "ok" and "model on cpu" in found["device"]["detail"]
    finally:
        sharded.close()
