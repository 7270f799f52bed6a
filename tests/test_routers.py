"""Each router's decision on constructed replica states (round profile: prefill of p tokens
takes 0.01 + 0.001 p s)."""

from __future__ import annotations

import pytest

from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers import AT_RISK, ON_TIME, VIOLATED, Retry, make_router
from tests.conftest import round_profile

P = round_profile()


def replica(name, queued_prompts=(), running=0, max_num_seqs=8):
    k = ReplicaState(name, "m", P, max_num_seqs)
    k.mark_ready(0.0)
    for _ in range(running):
        k.enqueue(LLMRequest(f"{name}-r", "t", "m", 10, 10, 0.0, 100.0))
        k.take(0.0)
    for i, p in enumerate(queued_prompts):
        k.enqueue(LLMRequest(f"{name}-q{i}", "t", "m", p, 10, 0.0, 100.0, seq=i))
    return k


def request(deadline, prompt=100, ttft_only=True):
    return LLMRequest("r", "t", "m", prompt, 10, 0.0, deadline, ttft_only=ttft_only)


def test_replica_estimates():
    busy = replica("busy", queued_prompts=(100, 200))
    assert busy.wait_s(0.0) == pytest.approx(0.11 + 0.21)  # queued prefills run first
    assert busy.service_s(request(1.0)) == pytest.approx(0.11)  # TTFT-covered: prefill only
    # E2E-covered: prefill + 9 decode steps of a batch of 1 at 11 ms.
    assert replica("idle").service_s(request(1.0, ttft_only=False)) == pytest.approx(0.11 + 9 * 0.011)


@pytest.mark.parametrize(
    "deadline, expected, priority",
    [
        (1.0, "idle", ON_TIME),  # both meet it: the least wait
        (0.2, "idle", AT_RISK),  # E: busy 0.43, idle 0.22, both > 0.2
        (0.05, "idle", AT_RISK),  # nobody meets it: the earliest expected finish
        (-1.0, "idle", VIOLATED),  # already late: the shortest wait
    ],
)
def test_cato_router_priorities(deadline, expected, priority):
    busy, idle = replica("busy", queued_prompts=(100, 200)), replica("idle", queued_prompts=(100,))
    # W: busy 0.32, idle 0.11; T = 0.11, so E: busy 0.43, idle 0.22.
    choice = make_router("cato").route(request(deadline), [busy, idle], now=0.0)
    assert (choice.replica.id, choice.priority) == (expected, priority)


def test_cato_router_skips_the_least_waiting_replica_when_it_would_miss():
    # a waits least (0.05) but its 50 running sequences ride along r's prefill step (0.01 +
    # 0.150) and make each decode step 61 ms: E_a = 0.05 + 0.16 + 9 x 0.061 = 0.759.
    # b waits 0.11 with nothing running:
    # E_b = 0.11 + 0.11 + 9 x 0.011 = 0.319. With slack 0.5 only b meets the deadline.
    a = replica("a", queued_prompts=(40,), running=50, max_num_seqs=100)
    b = replica("b", queued_prompts=(100,), max_num_seqs=100)
    r = request(0.5, ttft_only=False)
    assert a.wait_s(0) + a.service_s(r) == pytest.approx(0.759)
    assert b.wait_s(0) + b.service_s(r) == pytest.approx(0.319)
    choice = make_router("cato").route(r, [a, b], now=0.0)
    assert (choice.replica.id, choice.priority) == ("b", ON_TIME)


def test_cato_router_breaks_wait_ties_by_expected_finish():
    light = replica("light", running=0)
    heavy = replica("heavy", running=3)  # same W (0: slots free) but a bigger batch to join
    r = request(10.0, ttft_only=False)
    assert heavy.wait_s(0) == light.wait_s(0) == 0.0
    assert heavy.service_s(r) > light.service_s(r)
    assert make_router("cato").route(r, [heavy, light], 0.0).replica.id == "light"


def test_round_robin_cycles_per_model():
    ks = [replica(n) for n in "abc"]
    rr = make_router("round_robin")
    assert [rr.route(request(1), ks, 0).replica.id for _ in range(4)] == ["a", "b", "c", "a"]


def test_pow2_samples_as_ray_does_and_takes_the_shorter_queue_with_room():
    # Ray (pow_2_router.py:89-104): i = randrange(4), j = randrange(3), shifted past i.
    # random.Random(seed) gives (3, 1), (1, 3), (0, 1) for seeds 0, 1, 2.
    ks = [replica("0", running=3), replica("1", running=1), replica("2"), replica("3", running=1)]
    picks = [make_router("pow2", seed=s).route(request(1), ks, 0).replica.id for s in range(3)]
    assert picks == ["3", "1", "1"]  # a tie goes to the first sampled; "2" (idle) was never sampled
    # Both sampled replicas at the cap: retry, the first time at once.
    assert make_router("pow2", {"max_ongoing_requests": 1}, seed=2).route(request(1), ks, 0) == Retry(0.0)


@pytest.mark.parametrize("n", [3, 4, 5, 7, 8, 9, 1000, 1024, 1025])
def test_pow2_draws_are_randranges(n):
    # The sampler draws as Ray's random.randrange(n), randrange(n - 1) do, without their checks:
    # the same pair from the same seed, so results stay byte-identical.
    import random

    ks = [replica(str(i)) for i in range(n)]
    router, rng = make_router("pow2", seed=11), random.Random(11)
    for _ in range(500):
        i, j = rng.randrange(n), rng.randrange(n - 1)
        assert router.sample(ks) == (ks[i], ks[j + 1 if j >= i else j])


def test_pow2_with_two_replicas_orders_them_at_random():
    a, b = replica("a"), replica("b")  # equal queues: the first in Ray's random order wins
    assert [make_router("pow2", seed=s).route(request(1), [a, b], 0).replica.id for s in range(4)] == [
        "a",
        "b",
        "a",
        "b",
    ]  # getrandbits(1) = 1, 0, 1, 0


def test_pow2_backoff_first_retry_immediate_then_doubling_to_the_cap():
    full = [replica("x", running=5), replica("y", running=5)]
    pow2 = make_router("pow2", {"max_ongoing_requests": 5})
    r = request(1)
    delays = [pow2.route(r, full, 0) for _ in range(8)]
    # request_router.py:1244-1253 with constants.py:565-572
    assert delays == [Retry(d) for d in (0.0, 0.025, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5)]
    assert r.attempts == 8
    assert pow2.routing_tasks(3) == 6 and pow2.routing_tasks(40) == 50  # min(50, 2 x replicas)
