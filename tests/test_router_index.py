"""The cato router's indexed route chooses exactly what its reference scan chooses.

Every decision below is made twice on the same states: by ``route`` (through the pool's
ReadyReplicas index) and by ``route_scan`` on a router with the same rotation; replica,
priority, wait_s and the rotation afterwards must be identical, and the index must match
the replicas' states after every change made through the pool.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cato_core.pool import ModelPool
from cato_core.ready_index import ReadyReplicas, _is_quiet
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers import AT_RISK, ON_TIME, VIOLATED
from cato_core.routers.cato import CatoRouter
from cato_core.scalers import make_scaler
from tests.conftest import round_profile


class CheckedRouter(CatoRouter):
    """A cato router that checks each of its decisions against the reference scan."""

    def __init__(self):
        super().__init__()
        self.decisions = self.indexed = 0

    def route(self, r, replicas, now):
        ref = CatoRouter()
        ref._turn = self._turn
        expected = ref.route_scan(r, list(replicas), now)
        before = self._turn
        fast = self._route_indexed(r, replicas, now) if type(replicas) is ReadyReplicas else None
        self._turn = before
        got = super().route(r, replicas, now)
        assert (got.replica, got.priority, got.wait_s) == (expected.replica, expected.priority, expected.wait_s)
        assert self._turn == ref._turn
        self.decisions += 1
        self.indexed += fast is not None
        return got


def check_index(ready: ReadyReplicas) -> None:
    """The index agrees with the states: quiet positions exact, everyone else covered."""
    assert not ready.broken
    assert ready.quiet == [i for i, k in enumerate(ready) if _is_quiet(k)]
    suspects = set(ready.suspects())
    for k in ready:
        assert k.watcher is ready
        if not _is_quiet(k) and k not in suspects:
            assert k.running >= 1 and k._queued_prefill_s >= 0.0 and k._running_context >= 1


def make_pool(profile, max_num_seqs, dispatch=lambda k, r: None):
    router = CheckedRouter()
    p = ModelPool(
        "m", profile, max_num_seqs, router, make_scaler("fixed"), call_later=lambda d, fn: None, dispatch=dispatch
    )
    return p, router


def request(i, prompt, output, now, slack, ttft_only):
    return LLMRequest(f"r{i}", "t", "m", prompt, output, now, now + slack, ttft_only=ttft_only, seq=i)


profiles = st.builds(
    round_profile,
    overhead_s=st.sampled_from([0.0, 0.005, 0.0121294]),
    per_token_s=st.sampled_from([0.0, 6.85934e-05, 0.001]),
    linear_floor_s=st.sampled_from([0.0, 0.009284, 0.05]),
    prefill_attn_s=st.sampled_from([0.0, 1e-8, 1e-6]),
    decode_ctx_s=st.sampled_from([0.0, 3.74491e-07, 1e-5]),
)
slacks = st.one_of(
    st.sampled_from([-1.0, 0.0, 1e-9, 0.005, 0.0093, 0.011, 0.05, 1e9]),
    st.floats(-5, 5, allow_nan=False),
    st.floats(0, 0.2, allow_nan=False),
)
prompts = st.one_of(st.integers(1, 3000), st.sampled_from([0, 1, 64, 72]))


@settings(max_examples=150, deadline=None)
@given(profile=profiles, max_num_seqs=st.integers(1, 4), replicas=st.integers(1, 7), data=st.data())
def test_indexed_route_equals_the_scan_through_pool_changes(profile, max_num_seqs, replicas, data):
    now, i = 0.0, 0
    running: dict[ReplicaState, list[LLMRequest]] = {}
    eager = data.draw(st.booleans())  # an engine that takes work at once, as the sim's and live's do

    def dispatch(k, r):
        while eager and k.queue and k.running < max_num_seqs:
            running.setdefault(k, []).append(k.take(now))

    p, _ = make_pool(profile, max_num_seqs, dispatch)
    for j in range(replicas):
        p.mark_ready(p.new_replica(f"m-{j}", now), now)
    for _ in range(data.draw(st.integers(1, 60))):
        op = data.draw(st.sampled_from(["submit"] * 6 + ["take"] * 3 + ["finish"] * 3 + ["time", "ready", "release"]))
        busy = [k for k in p.ready if k.queue]
        live = [k for k in running if running[k]]
        if op == "submit" or (op == "take" and not busy) or (op == "finish" and not live):
            r = request(
                i, data.draw(prompts), data.draw(st.integers(1, 400)), now, data.draw(slacks), data.draw(st.booleans())
            )
            i += 1
            p.submit(r, now)
        elif op == "take":
            k = data.draw(st.sampled_from(busy))
            running.setdefault(k, []).append(k.take(now))
        elif op == "finish":
            k = data.draw(st.sampled_from(live))
            rs = running[k]
            k.finish(rs.pop(data.draw(st.integers(0, len(rs) - 1))), now)
            p.call_ended(k, now)
        elif op == "time":
            now += data.draw(st.sampled_from([0.0, 0.001, 0.02, 0.5, 3.0]))
        elif op == "ready":
            p.mark_ready(p.new_replica(f"m-{len(p.history)}", now), now)
        elif op == "release" and len(p.ready) > 1:
            k = data.draw(st.sampled_from(list(p.ready)))
            if data.draw(st.booleans()):
                p.release(k, now)
            else:
                p.fail(k, now)  # its queue is routed again, through the checked router
                running.pop(k, None)
        check_index(p.ready)


def test_the_index_answers_most_decisions_of_a_realistic_pool():
    """Guard against a fast path that silently always falls back."""
    p, router = make_pool(round_profile(linear_floor_s=0.009284, decode_ctx_s=3.74491e-07), 4)
    for j in range(20):
        p.mark_ready(p.new_replica(f"m-{j}", 0.0), 0.0)
    for i in range(200):
        now = i * 0.01
        p.submit(request(i, 50 + i % 7, 20, now, 0.5 if i % 3 else 0.01, bool(i % 2)), now)
        k = p.ready[(i * 7) % 20]
        if k.queue:
            r = k.take(now)
            if i % 4:
                k.finish(r, now)
        check_index(p.ready)
    assert router.decisions == 200 and router.indexed >= 150


# -- hand-checked cases (round profile: prefill of p tokens takes 0.01 + 0.001 p s) --------


def ready_pool(n, profile=None, max_num_seqs=4):
    p, router = make_pool(profile or round_profile(decode_ctx_s=1e-6), max_num_seqs)
    for j in range(n):
        p.mark_ready(p.new_replica(f"m-{j}", 0.0), 0.0)
    return p, router


def test_on_time_goes_to_the_first_quiet_replica_after_the_turn():
    p, router = ready_pool(4)
    a, b, c, _ = p.ready
    b.enqueue(request(90, 100, 10, 0.0, 5.0, True))
    b.take(0.0)  # b runs: W 0, E = 0.01 + 0.001 * 101 + 1e-6 * 100 > T0 = 0.11
    assert p.ready.quiet == [0, 2, 3]
    router._turn = 0  # the scan starts at 1: b (busy), then c
    choice = router.route(request(1, 100, 10, 0.0, 1.0, True), p.ready, 0.0)
    assert (choice.replica, choice.priority, choice.wait_s, router._turn) == (c, ON_TIME, 0.0, 1)
    router._turn = 3  # starts at 0: a
    assert router.route(request(2, 100, 10, 0.0, 1.0, True), p.ready, 0.0).replica is a


def test_at_risk_when_even_a_quiet_replica_misses():
    p, router = ready_pool(3)
    router._turn = 1
    choice = router.route(request(1, 100, 10, 0.0, 0.1, True), p.ready, 0.0)  # T0 = 0.11 > 0.1
    assert (choice.replica.id, choice.priority, choice.wait_s, router._turn) == ("m-2", AT_RISK, 0.0, 2)


def test_a_queue_with_nothing_running_ties_the_quiet_ones():
    # Prefills take no time: a replica with a queue and nothing running has W = 0 and
    # E = T(0, 0) like a quiet one, so the rotation decides between them.
    free = round_profile(overhead_s=0.0, per_token_s=0.0, decode_ctx_s=1e-6)
    p, router = ready_pool(3, free)
    _, b, _ = p.ready
    b.enqueue(request(90, 100, 10, 0.0, 5.0, True))
    assert p.ready.quiet == [0, 2] and p.ready.suspects() == [b]
    assert (b.wait_s(0.0), b.service_s(request(1, 100, 10, 0.0, 1.0, True))) == (0.0, 0.0)
    router._turn = 0
    assert router.route(request(1, 100, 10, 0.0, 1.0, True), p.ready, 0.0).replica is b


def test_a_queued_sum_drifted_below_zero_is_evaluated_exactly():
    # prefill = p**2 s: 1e18 s absorbs two 1 s prefills, and taking them leaves -1.
    p, router = ready_pool(3, round_profile(overhead_s=0.0, per_token_s=0.0, prefill_attn_s=1.0, decode_ctx_s=1e-6))
    _, b, _ = p.ready
    for j, prompt in enumerate((10**9, 1, 1)):
        b.enqueue(request(90 + j, prompt, 10, 0.0, 5.0 + j, True))
    b.take(0.0)
    b.take(0.0)
    assert b._queued_prefill_s == -1.0 and b in p.ready.suspects()
    router._turn = 1  # the scan starts at c (quiet), but b's W = -1 is the least
    choice = router.route(request(1, 1, 10, 0.0, 1e30, True), p.ready, 0.0)
    assert (choice.replica, choice.priority, choice.wait_s) == (b, ON_TIME, -1.0)
    # violated: argmin W is b too; the index cannot vouch for "first W == 0", so it scans
    late = request(2, 1, 10, 0.0, -1.0, True)
    assert router._route_indexed(late, p.ready, 0.0) is None
    assert router.route(late, p.ready, 0.0) == router.route_scan(late, list(p.ready), 0.0)
    assert router.route(late, p.ready, 0.0).replica is b


def test_violated_takes_the_first_replica_with_no_wait():
    p, router = ready_pool(3, max_num_seqs=1)
    a, b, c = p.ready
    a.enqueue(request(90, 100, 10, 0.0, 5.0, True))  # W 0.11
    b.enqueue(request(91, 100, 10, 0.0, 5.0, True))
    b.take(0.0)  # b runs, no queue, saturated: W = expected finish 0.11 + 9 x 0.011 - now
    choice = router.route(request(1, 100, 10, 0.0, -1.0, True), p.ready, 0.0)
    assert (choice.replica, choice.priority, choice.wait_s, router._turn) == (c, VIOLATED, 0.0, 0)


def test_cases_the_index_leaves_to_the_scan():
    r = request(1, 50, 10, 0.0, 1.0, True)
    # decode_ctx_s = 0 and a floor the one extra token does not lift: a busy replica may tie
    p, router = ready_pool(3, round_profile(linear_floor_s=0.5))
    assert router._route_indexed(r, p.ready, 0.0) is None
    # every replica busy (the overloaded case)
    p, router = ready_pool(2)
    for k in p.ready:
        k.enqueue(request(90, 100, 10, 0.0, 5.0, True))
        k.take(0.0)
    assert p.ready.quiet == [] and router._route_indexed(r, p.ready, 0.0) is None
    # a filtered list (a retried call avoids a replica) and a second index over the same replicas
    assert type(list(p.ready)) is list
    assert ReadyReplicas(p.ready).broken


def index_state(ready: ReadyReplicas) -> tuple:
    return list(ready.quiet), set(ready.suspects()), set(ready._empty_prompt), dict(ready._pos), ready.broken


def test_a_replica_added_at_the_end_is_indexed_as_a_rebuild_would():
    profile = round_profile()
    ks = [ReplicaState(f"k{i}", "m", profile, 4) for i in range(6)]
    ks[2].enqueue(request(1, 100, 10, 0.0, 5.0, True))  # a queue and nothing running: a suspect
    ks[3].enqueue(request(2, 100, 10, 0.0, 5.0, True))
    ks[3].take(0.0)  # running, but its history is unknown: evaluated until it is quiet
    ready = ReadyReplicas()
    for k in ks[:4]:
        ready.append(k)
    ready.insert(len(ready), ks[4])
    ready.insert(99, ks[5])  # past the end, as list.insert allows: still the end
    built = index_state(ready)
    ready._rebuild()
    assert built == index_state(ready)
    assert ready.quiet == [0, 1, 4, 5] and set(ready.suspects()) == {ks[2], ks[3]}
    # elsewhere than the end, or another profile: rebuilt, with every position moved
    ready.insert(0, ReplicaState("first", "m", profile, 4))
    assert ready.quiet == [0, 1, 2, 5, 6] and ready.position(ks[5]) == 6
    ready.append(ReplicaState("other", "m", round_profile(overhead_s=0.5), 4))
    assert ready.broken
