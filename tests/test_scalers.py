"""Each scaler's decision on constructed states."""

from __future__ import annotations

from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers import AT_RISK, ON_TIME, VIOLATED
from cato_core.scalers import make_scaler
from tests.conftest import round_profile


def replicas(n, ongoing=0, ready_at=0.0):
    ks = []
    for i in range(n):
        k = ReplicaState(f"k{i}", "m", round_profile(), 8)
        k.mark_ready(ready_at)
        for j in range(ongoing):
            k.enqueue(LLMRequest(f"r{j}", "t", "m", 10, 10, 0.0, 1.0))
        ks.append(k)
    return ks


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


def test_rayserve_scaler_waits_upscale_delay_then_targets_ongoing():
    s = make_scaler("rayserve")  # target 2 ongoing, upscale delay 30 s, tick 0.1 s
    ks = replicas(2, ongoing=5)  # 10 ongoing -> desired ceil(2 * (1 + (10/2/2 - 1))) = 5
    adds = [s.decide(round(0.1 * i, 1), ks, free=10, pending=0).add for i in range(1, 302)]
    assert adds[:300] == [0] * 300  # 300 ticks = 30 s, not yet more than the delay
    assert adds[300] == 3


def test_rayserve_scaler_counts_router_pending_and_respects_room():
    s = make_scaler("rayserve", {"upscale_delay_s": 0})
    ks = replicas(1, ongoing=2)  # 2 ongoing + 6 held at the router = 8 -> desired 4
    assert s.decide(0.1, ks, free=10, pending=6).add == 3
    s = make_scaler("rayserve", {"upscale_delay_s": 0})
    assert s.decide(0.1, ks, free=1, pending=6).add == 1


def test_rayserve_scaler_downscales_after_its_delay():
    s = make_scaler("rayserve", {"downscale_delay_s": 1.0, "min_replicas": 1})
    ks = replicas(3)  # no load: desired 1 (min)
    out = [s.decide(round(0.1 * i, 1), ks, free=0, pending=0) for i in range(1, 12)]
    assert [len(d.release) for d in out] == [0] * 10 + [2]


def test_fixed_scaler_never_acts():
    s = make_scaler("fixed")
    assert s.interval_s is None
    d = s.decide(1.0, replicas(2, ongoing=50), free=10, pending=100)
    assert d.add == 0 and d.release == []
