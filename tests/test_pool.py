"""The core's model pool on constructed states: what it holds, routes, retries and releases.

A driver here is three lists and a timer queue run by hand, so every expectation is exact.
"""

from __future__ import annotations

import pytest

from cato_core.node_record import NodeRecord
from cato_core.pool import ModelPool
from cato_core.request import LLMRequest
from cato_core.routers import make_router
from cato_core.scalers import make_scaler
from tests.conftest import round_profile


class Driver:
    def __init__(self):
        self.timers: list[tuple[float, object]] = []  # (delay, fn)
        self.dispatched: list[tuple[str, str]] = []  # (replica, request)
        self.rejected: list[str] = []
        self.released: list[str] = []

    def call_later(self, delay_s, fn):
        self.timers.append((delay_s, fn))

    def fire(self, now):
        timers, self.timers = self.timers, []
        for _, fn in timers:
            fn(now)


def pool(router="round_robin", scaler="cato", max_num_seqs=2, **router_params):
    d = Driver()
    p = ModelPool(
        "m",
        round_profile(),
        max_num_seqs,
        make_router(router, router_params),
        make_scaler(scaler),
        call_later=d.call_later,
        dispatch=lambda k, r: d.dispatched.append((k.id, r.request_id)),
        reject=lambda r: d.rejected.append(r.request_id),
        on_released=lambda k: d.released.append(k.id),
    )
    return p, d


def call(name, deadline=100.0, seq=0):
    r = LLMRequest(name, "t", "m", 10, 10, 0.0, deadline, seq=seq)
    r.record = NodeRecord("t", name, "llm", "m", deadline, queued_s=0.0)
    return r


def test_calls_wait_for_a_starting_replica_and_go_to_it_in_order():
    p, d = pool()
    k = p.new_replica("m-1", 0.0)
    for i in range(3):
        p.submit(call(f"c{i}", seq=i), 0.5)
    assert [r.request_id for r in p.held] == ["c0", "c1", "c2"] and p.pending == 3
    assert p.mark_ready(k, 2.0)
    assert d.dispatched == [("m-1", "c0"), ("m-1", "c1"), ("m-1", "c2")]
    assert p.pending == 0 and k.queued == 3 and k.requests == 3 and k.ready_s == 2.0
    rec = k.queue.peek().record
    assert (rec.replica, rec.priority, rec.queued_s) == ("m-1", 2, 2.0)  # queued when routed, not when held


def test_a_call_with_nowhere_to_go_is_rejected():
    p, d = pool(scaler="fixed")  # nothing starting, and no scaler will add a replica
    p.submit(call("c"), 0.0)
    assert d.rejected == ["c"] and p.pending == 0
    p2, d2 = pool(scaler="cato")  # the scaler may add one: held
    p2.submit(call("c"), 0.0)
    assert d2.rejected == [] and p2.pending == 1


def test_a_retried_call_avoids_the_replica_that_failed_it():
    p, d = pool()
    a, b = p.new_replica("m-1", 0.0), p.new_replica("m-2", 0.0)
    p.mark_ready(a, 0.0)
    p.mark_ready(b, 0.0)
    r = call("c")
    r.avoid = frozenset({"m-1"})
    for _ in range(3):  # round robin would alternate; the avoided replica is never offered
        p.submit(r, 1.0)
    assert [rep for rep, _ in d.dispatched] == ["m-2", "m-2", "m-2"]
    only = call("d")
    only.avoid = frozenset({"m-1", "m-2"})
    p.submit(only, 1.0)
    assert d.rejected == ["d"]  # tried everywhere, nothing starting


def test_router_backoff_is_pending_until_the_retry_routes_it():
    p, d = pool(router="pow2", max_ongoing_requests=1)
    k = p.new_replica("m-1", 0.0)
    p.mark_ready(k, 0.0)
    p.submit(call("a"), 0.0)
    p.submit(call("b"), 0.0)  # the only replica is at its cap: Retry, the first one at once
    assert p.retrying == 1 and p.pending == 1 and [t for t, _ in d.timers] == [0.0]
    d.fire(0.0)
    assert [t for t, _ in d.timers] == [0.025]  # still full: then Ray's backoff
    k.finish(k.take(0.0), 0.01)  # a's slot frees before the retry
    d.fire(0.025)
    assert p.retrying == 0 and d.dispatched[-1] == ("m-1", "b") and d.timers == []


def test_a_freed_slot_goes_to_the_oldest_waiting_call():
    """Ray's FIFOMixin (request_router.py:428-460): whichever routing task finds room, the
    oldest pending call gets it; the finder keeps routing its own on its backoff."""
    p, d = pool(router="pow2", max_ongoing_requests=1)
    k = p.new_replica("m-1", 0.0)
    p.mark_ready(k, 0.0)
    p.submit(call("a"), 0.0)  # takes the slot
    p.submit(call("b"), 0.0)  # first to wait: its task retries at once
    p.submit(call("c"), 0.0)  # queued behind b; a second routing task (2 x 1 replica) starts
    assert [r.request_id for r in p.waiting] == ["b", "c"] and len(d.timers) == 2
    b_task, c_task = d.timers
    d.timers = []
    c_task[1](0.0)  # c's task: first try, still full -> retry at once
    b_task[1](0.0)  # b's task: full -> retry at once
    c_retry, b_retry = d.timers
    d.timers = []
    k.finish(k.take(0.0), 0.01)  # a ends: one slot
    c_retry[1](0.02)  # c's task finds it first...
    assert d.dispatched[-1] == ("m-1", "b")  # ...and b, the oldest, gets it
    assert [r.request_id for r in p.waiting if p._queued.get(id(r), 0) != 0] == ["c"]
    assert [t for t, _ in d.timers] == [0.025]  # c's task goes on with its backoff; b's task is gone
    b_retry[1](0.02)
    assert len(d.timers) == 1 and p.retrying == 1


def test_routing_tasks_are_capped_at_twice_the_ready_replicas():
    p, d = pool(router="pow2", max_ongoing_requests=1)
    k = p.new_replica("m-1", 0.0)
    p.mark_ready(k, 0.0)
    for i in range(5):
        p.submit(call(f"c{i}", seq=i), 0.0)  # c0 routed; c1-c4 wait
    assert p.retrying == 4 and len(d.timers) == 2  # min(50, 2 x 1) routing tasks


def test_a_draining_replica_is_force_stopped_after_the_scalers_timeout():
    stopped = []
    d = Driver()
    p = ModelPool(
        "m",
        round_profile(),
        2,
        make_router("pow2"),
        make_scaler("rayserve"),  # graceful_shutdown_timeout_s 20 (Ray's constants.py:270)
        call_later=d.call_later,
        dispatch=lambda k, r: None,
        on_released=lambda k: d.released.append(k.id),
        stop=lambda k, now: stopped.append((k.id, now)),
    )
    k = p.new_replica("m-1", 0.0)
    p.mark_ready(k, 0.0)
    p.submit(call("a"), 0.0)
    k.take(0.0)
    p.release(k, 5.0)
    assert k.state == "draining" and [t for t, _ in d.timers] == [20.0]
    d.fire(25.0)
    assert stopped == [("m-1", 25.0)] and k.state == "released" and d.released == ["m-1"]


def test_cancelled_calls_are_dropped_wherever_they_are_held():
    p, d = pool()
    k = p.new_replica("m-1", 0.0)
    a, b = call("a"), call("b")
    p.submit(a, 0.0)
    p.submit(b, 0.0)
    a.cancelled = True
    p.mark_ready(k, 1.0)
    assert d.dispatched == [("m-1", "b")]


def test_lifecycle_draining_until_empty_then_released():
    p, d = pool()
    k = p.new_replica("m-1", 0.0)
    p.mark_ready(k, 1.0)
    r = call("a")
    p.submit(r, 1.0)
    k.take(1.0)
    p.release(k, 2.0)
    assert (k.state, p.ready, d.released) == ("draining", [], [])
    k.finish(r, 3.0)
    p.call_ended(k, 3.0)
    assert (k.state, k.released_s, d.released, p.replicas) == ("released", 3.0, ["m-1"], [])
    # Released while starting: gone at once, and its late readiness is ignored.
    s = p.new_replica("m-2", 4.0)
    p.release(s, 5.0)
    assert s.state == "released" and not p.mark_ready(s, 6.0) and p.ready == []


def test_a_failed_replica_gives_its_queue_back_to_routing():
    p, d = pool()
    a, b = p.new_replica("m-1", 0.0), p.new_replica("m-2", 0.0)
    p.mark_ready(a, 0.0)
    p.mark_ready(b, 0.0)
    for i in range(4):
        p.submit(call(f"c{i}", seq=i), 0.0)  # round robin: c0, c2 on m-1; c1, c3 on m-2
    d.dispatched.clear()
    p.fail(a, 1.0)
    assert a.state == "released" and d.released == ["m-1"]
    assert d.dispatched == [("m-2", "c0"), ("m-2", "c2")]


def test_ready_replicas_keep_the_order_they_were_asked_in():
    p, _ = pool()
    ks = [p.new_replica(f"m-{i}", 0.0) for i in range(3)]
    for i in (2, 0, 1):
        p.mark_ready(ks[i], float(i))
    assert [k.id for k in p.ready] == ["m-0", "m-1", "m-2"]


@pytest.mark.parametrize("adds", [0, 2])
def test_scale_adds_through_the_driver_then_releases(adds):
    p, d = pool(scaler="fixed")
    p.scaler.decide = lambda now, replicas, free, pending: type("D", (), {"add": adds, "release": [replicas[0]]})()
    k = p.new_replica("m-1", 0.0)
    p.mark_ready(k, 0.0)
    added = []
    p.scale(10.0, free=4, add=lambda: added.append(p.new_replica(f"new-{len(added)}", 10.0).id))
    assert added == [f"new-{i}" for i in range(adds)] and d.released == ["m-1"]
