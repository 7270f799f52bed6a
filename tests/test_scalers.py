"""Each scaler's decision on constructed states."""

from __future__ import annotations

import pytest

from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers import AT_RISK, ON_TIME, VIOLATED
from cato_core.scalers import make_scaler
from tests.conftest import round_profile


def replicas(n, ongoing=0, ready_at=0.0, first=0):
    ks = []
    for i in range(n):
        k = ReplicaState(f"k{first + i}", "m", round_profile(), 8)
        if ready_at is not None:
            k.mark_ready(ready_at)
        load(k, ongoing)
        ks.append(k)
    return ks


def load(k, n):
    """n more calls sent to k (as the pool routes them)."""
    for j in range(n):
        k.enqueue(LLMRequest(f"r{j}", "t", "m", 10, 10, 0.0, 1.0))
        k.requests += 1


def feed(scaler, priorities, now):
    for p in priorities:
        scaler.on_routed(None, p, now)


def test_cato_scaler_adds_after_repeated_violations():
    s = make_scaler(
        "cato", {"window_s": 2, "max_exceeded_proportion": 0.1, "max_exceeded_times": 2, "scale_per_violation": 0.5}
    )
    ks = replicas(2, ongoing=1)  # none idle
    feed(s, [VIOLATED, AT_RISK, AT_RISK, ON_TIME, ON_TIME], 1.0)  # v/n = 3/5 > 0.1
    assert s.decide(2.0, ks, free=10, pending=0).add == 0  # first exceeded window: wait
    feed(s, [VIOLATED] * 5 + [ON_TIME] * 5, 3.0)
    assert s.decide(4.0, ks, free=10, pending=0).add == 3  # ceil(0.5 * (5 - 0 idle))
    feed(s, [VIOLATED] * 5, 5.0)
    assert s.decide(6.0, ks, free=10, pending=0).add == 0  # the count starts again after adding


def test_cato_scaler_counts_idle_replicas_and_free_room():
    s = make_scaler("cato", {"max_exceeded_times": 1})
    ks = replicas(2, ongoing=1) + replicas(2)  # two idle
    feed(s, [AT_RISK] * 3, 1.0)
    assert s.decide(2.0, ks, free=10, pending=0).add == 1  # ceil(0.5 * (3 - 2))
    feed(s, [AT_RISK] * 9, 3.0)
    assert s.decide(4.0, ks, free=2, pending=0).add == 2  # ceil(0.5 * 7) = 4, only 2 fit


def test_cato_scaler_quiet_window_resets_and_idle_replicas_are_released():
    s = make_scaler("cato", {"max_exceeded_times": 2, "idle_timeout_s": 30, "min_replicas": 1})
    ks = replicas(3)  # idle since 0
    feed(s, [AT_RISK], 1.0)  # a violation at t=1
    d = s.decide(2.0, ks, free=0, pending=0)
    assert d.add == 0 and d.release == []
    feed(s, [ON_TIME] * 10, 3.0)
    assert s.decide(4.0, ks, free=0, pending=0).release == []  # quiet only since t=1
    d = s.decide(31.0, ks, free=0, pending=0)
    assert [k.id for k in d.release] == ["k0", "k1"]  # down to min_replicas = 1


def ticks(n, start=1):
    return [round(0.1 * i, 1) for i in range(start, start + n)]


def test_rayserve_scaler_waits_upscale_delay_then_targets_ongoing():
    s = make_scaler("rayserve")  # target 2, upscale delay 30 s, tick 0.1 s
    ks = replicas(2, ongoing=5)  # 10 ongoing -> desired ceil(2 + (10/2 - 2)) = 5
    adds = [s.decide(t, ks, free=10, pending=0).add for t in ticks(301)]
    assert s.total == pytest.approx(10.0)
    assert adds[:300] == [0] * 300  # wanting up since the first tick (0.1 s): 30 s at 30.1 s
    assert adds[300] == 3


def test_rayserve_scaler_sees_handle_metrics_sampled_every_6_s_and_pushed_every_10_s():
    s = make_scaler("rayserve", {"upscale_delay_s": 0})
    ks = replicas(2)
    load(ks[0], 1)
    load(ks[1], 1)  # sent to both, so both series exist from the first sample
    ks[0].queue.pop(), ks[1].queue.pop()  # ...and done: 0 ongoing
    seen = {}
    for t in ticks(120):  # 0.1 .. 12.0 s
        if t == 3.0:
            load(ks[0], 6)
            load(ks[1], 4)  # 10 ongoing from 3 s
        d = s.decide(t, ks, free=10, pending=0)
        seen[t] = (s.total, d.add)
    assert seen[0.1] == (0.0, 0)  # record and push at the first tick
    assert seen[10.0] == (0.0, 0)  # the 6.1 s sample (10) is not pushed yet
    # Pushed at 10.1 s: samples at 0.1 (0) and 6.1 (10), the last held to now:
    # (0 x 6 + 10 x 4) / 10 = 4 -> desired 4 / 2 = 2 replicas: no change.
    assert seen[10.1][0] == pytest.approx(4.0) and seen[10.1][1] == 0
    assert seen[12.0][0] == pytest.approx((0 * 6 + 10 * 5.9) / 11.9)


def test_rayserve_scaler_counts_router_pending_and_respects_room():
    s = make_scaler("rayserve", {"upscale_delay_s": 0})
    ks = replicas(1, ongoing=2)  # 2 ongoing + 6 held at the router = 8 -> desired 4
    assert s.decide(0.1, ks, free=10, pending=6).add == 3
    s = make_scaler("rayserve", {"upscale_delay_s": 0})
    assert s.decide(0.1, ks, free=1, pending=6).add == 1


def test_rayserve_scaler_from_zero_replicas_skips_the_delay():
    s = make_scaler("rayserve", {"min_replicas": 0})  # upscale delay 30 s
    assert s.decide(0.1, [], free=8, pending=0).add == 0  # nothing queued: stays at 0
    # Calls queue from 0.2 s. With no replica the handle pushes at once, but what it pushes is
    # its store (router.py:503-535), sampled at 0.1 s (0 queued) and next at 6.1 s (3 queued).
    adds = [s.decide(t, [], free=8, pending=3).add for t in ticks(60, start=2)]
    assert adds == [0] * 59 + [1]  # at 6.1 s: one replica at once, not after upscale_delay_s
    starting = replicas(1, ready_at=None)
    assert s.decide(6.2, starting, free=7, pending=3).add == 0  # its target is already 1


def test_rayserve_scaler_downscales_after_its_delay_newest_first_not_running_first():
    s = make_scaler("rayserve", {"downscale_delay_s": 1.0, "min_replicas": 1})
    ks = replicas(2) + replicas(1, ready_at=None, first=2) + replicas(1, first=3)  # k2 is starting
    out = [s.decide(t, ks, free=0, pending=0) for t in ticks(11)]
    assert [len(d.release) for d in out] == [0] * 10 + [3]  # wanting down since 0.1 s: 1 s at 1.1 s
    assert [k.id for k in out[-1].release] == ["k2", "k3", "k1"]  # deployment_scheduler.py:1308-1387


def test_rayserve_scaler_min_replicas_none_keeps_the_replicas_it_started_with():
    s = make_scaler("rayserve", {"min_replicas": None, "target_ongoing_requests": 10**9, "downscale_delay_s": 0})
    ks = replicas(2, ongoing=3)
    assert [s.decide(t, ks, free=6, pending=0).release for t in ticks(5)] == [[]] * 5
    assert s.drain_timeout_s == 20.0


def test_fixed_scaler_never_acts():
    s = make_scaler("fixed")
    assert s.interval_s is None
    d = s.decide(1.0, replicas(2, ongoing=50), free=10, pending=100)
    assert d.add == 0 and d.release == []
