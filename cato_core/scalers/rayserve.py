"""Ray Serve's default autoscaling policy, fed as Ray feeds it: handle metrics on Ray's periods.

Follows Ray 2.60 (paths under the wheel's ``ray/``). The driver calls ``decide`` every control
loop tick (serve/_private/constants.py:77) with ``now``; the scaler plays three parts:

- the handle (the pool is one router: serve/_private/router.py:323-349, 456-535): its
  queued calls (the pool's ``pending``) and the calls sent to each replica and not done
  (``ongoing``) are sampled every min(0.2 x look_back_period_s, metrics_interval_s) and
  pushed every metrics_interval_s, both from the first tick; a push carries the samples of
  the last look_back_period_s (metrics_utils.py:164-191); with no replica running and a
  call queued it pushes at once (router.py:267-280, 423-428);
- the controller (serve/_private/autoscaling_state.py:795-941): the total of the last push,
  as a time-weighted mean from the latest first sample among its series (a replica's series
  starts with the first sample after a call was sent to it) to now, the last sample held
  until now;
- the policy (serve/autoscaling_policy.py:33-65, 68-150, 153-175, 222-232, 334-364): desired
  = total / target; ceil(running + factor x (desired - running)); act once the same
  direction has held for the delay (wall clock); from zero running replicas with calls
  waiting, scale to max(1, target) at once; clip to [min_replicas, max_replicas].

Downscaling stops replicas not yet running first, then running ones newest first
(serve/_private/deployment_scheduler.py:1308-1387; node preferences are not modelled: the
core knows no nodes). A draining replica is force-stopped after graceful_shutdown_timeout_s
(``drain_timeout_s``; the pool does it, cato_core.pool).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from cato_core.replica import ReplicaState
from cato_core.scalers.base import ScaleDecision, active

_EPS_S = 1e-6  # ray/serve/autoscaling_policy.py:30; also absorbs ticks that add up 0.1 s in floats


class RayServeScalerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_ongoing_requests: float = Field(default=2.0, gt=0)  # ray/serve/_private/constants.py:291
    min_replicas: int | None = Field(default=1, ge=0)  # ray/serve/config.py:615; None: the replicas at start
    max_replicas: int | None = Field(default=None, ge=1)  # None: as many as accelerators allow
    look_back_period_s: float = Field(default=30.0, gt=0)  # ray/serve/config.py:660
    metrics_interval_s: float = Field(default=10.0, gt=0)  # ray/serve/config.py:414 (push period)
    record_interval_factor: float = Field(default=0.2, gt=0)  # ray/serve/_private/constants.py:488
    upscale_delay_s: float = Field(default=30.0, ge=0)  # ray/serve/config.py:698
    downscale_delay_s: float = Field(default=600.0, ge=0)  # ray/serve/config.py:689
    downscale_to_zero_delay_s: float | None = Field(default=None, ge=0)  # ray/serve/config.py:694
    upscaling_factor: float = Field(default=1.0, gt=0)  # smoothing_factor, ray/serve/config.py:664
    downscaling_factor: float = Field(default=1.0, gt=0)  # smoothing_factor, ray/serve/config.py:664
    control_loop_interval_s: float = Field(default=0.1, gt=0)  # ray/serve/_private/constants.py:77
    graceful_shutdown_timeout_s: float = Field(default=20.0, ge=0)  # ray/serve/_private/constants.py:270


class RayServeScaler:
    name = "rayserve"

    def __init__(self, params: RayServeScalerParams | None = None):
        p = self.params = params or RayServeScalerParams()
        self.interval_s = p.control_loop_interval_s
        self.drain_timeout_s = p.graceful_shutdown_timeout_s
        self.record_interval_s = min(p.look_back_period_s * p.record_interval_factor, p.metrics_interval_s)
        self._min: int | None = p.min_replicas
        self._t0: float | None = None  # the first tick: the handle's metric tasks start
        self._records = self._pushes = 0  # samples taken, pushes made
        self._samples: list[tuple[float, int, dict[str, int]]] = []  # (time, queued, sent per replica)
        self._report: dict[str | None, list[tuple[float, int]]] = {}  # the last push: queued (None), per replica
        self._direction = 0  # >0: wanting up since _since, <0: down
        self._since: float | None = None
        self.total = 0.0  # the controller's last total ongoing requests (for inspection)

    def on_routed(self, r, priority, now) -> None:
        pass

    # -- the handle --------------------------------------------------------------------
    @staticmethod
    def sent(replicas: Sequence[ReplicaState]) -> dict[str, int]:
        """Calls sent per replica the handle tracks: routed to, and running or still busy
        (router.py:286-303)."""
        return {k.id: k.ongoing for k in replicas if k.requests > 0 and (k.state == "ready" or k.ongoing > 0)}

    def record(self, now: float, replicas: Sequence[ReplicaState], queued: int) -> None:
        """One sample of the handle's metrics store (router.py:456-501)."""
        self._samples.append((now, queued, self.sent(replicas)))
        start = now - self.params.look_back_period_s
        while self._samples[0][0] <= start:  # metrics_utils.py:164-191
            self._samples.pop(0)

    def push(self, now: float, replicas: Sequence[ReplicaState], queued: int) -> None:
        """The handle's report (router.py:503-535): per series, its samples of the last
        look_back_period_s, or its value now when it has none; replicas it no longer tracks
        are left out."""
        start = now - self.params.look_back_period_s
        kept = [s for s in self._samples if s[0] > start]
        report = {None: [(t, q) for t, q, _ in kept] or [(now, queued)]}
        for rid, value in self.sent(replicas).items():
            report[rid] = [(t, sent[rid]) for t, _, sent in kept if rid in sent] or [(now, value)]
        self._report = report

    def total_ongoing(self, now: float) -> float:
        """The controller's total of the last report: the sum of its series as a step
        function, averaged over time from the latest first point of any series to now
        (autoscaling_state.py:795-941, metrics_utils.py:203-258)."""
        series = [s for s in self._report.values() if s]
        if not series:
            return 0.0
        times = sorted({t for s in series for t, _ in s})
        start = max(s[0][0] for s in series) if len(series) > 1 else times[0]
        last = times[-1]
        end = now if now > last else last + 1e-3  # the last value holds until now
        total = 0.0
        for i, t in enumerate(times):
            lo, hi = max(t, start), times[i + 1] if i + 1 < len(times) else end
            if hi > lo:
                total += (hi - lo) * sum(_at(s, t) for s in series)
        return total / (end - start)

    # -- the policy --------------------------------------------------------------------
    def desired(self, running: int, target_num: int, total: float) -> int:
        """The policy's number before delays and bounds (autoscaling_policy.py:33-65, 222-232, 334-364)."""
        p = self.params
        if running == 0:
            if total > 0:
                return max(math.ceil(1 * p.upscaling_factor), target_num)
            return target_num
        want = total / p.target_ongoing_requests
        delta = want - running
        factor = p.upscaling_factor if delta > 0 else p.downscaling_factor
        scaled = math.ceil(running + factor * delta)
        if math.ceil(want) < running and scaled == running:
            scaled -= 1
        return scaled

    def _delayed(self, desired: int, target_num: int, now: float) -> int:
        """The delay logic (autoscaling_policy.py:68-150)."""
        p = self.params
        if desired > target_num:
            if self._direction < 0 or self._since is None:
                self._since = now
            self._direction = 1
            if now - self._since + _EPS_S >= p.upscale_delay_s:
                self._direction, self._since = 0, None
                return desired
        elif desired < target_num:
            if self._direction > 0 or self._since is None:
                self._since = now
            self._direction = -1
            if target_num == 1:
                delay = p.downscale_to_zero_delay_s if p.downscale_to_zero_delay_s is not None else p.downscale_delay_s
            else:
                delay, desired = p.downscale_delay_s, max(1, desired)
            if now - self._since + _EPS_S >= delay:
                self._direction, self._since = 0, None
                return desired
        else:
            self._direction, self._since = 0, None
        return target_num

    def decide(self, now, replicas, free, pending) -> ScaleDecision:
        p = self.params
        size = active(replicas)
        target_num = len(size)  # Ray's target: starting and running
        running = sum(1 for k in size if k.state == "ready")
        if self._t0 is None:
            self._t0 = now
            if self._min is None:
                self._min = target_num
        if now + _EPS_S >= self._t0 + self._records * self.record_interval_s:
            self._records += 1
            self.record(now, replicas, pending)
        if now + _EPS_S >= self._t0 + self._pushes * p.metrics_interval_s:
            self._pushes += 1
            self.push(now, replicas, pending)
        elif running == 0 and pending > 0:
            self.push(now, replicas, pending)  # scaled to zero: pushed at once
        total = self.total = self.total_ongoing(now)
        desired = self.desired(running, target_num, total)
        if running == 0 and desired > 0:
            decision = desired  # from zero: no delay (autoscaling_policy.py:164-166, 222-232)
        else:
            decision = self._delayed(max(0, desired), target_num, now)
        if p.max_replicas is not None:
            decision = min(p.max_replicas, decision)
        decision = min(max(self._min, decision), target_num + free)  # apply_bounds; what fits
        out = ScaleDecision()
        if decision > target_num:
            out.add = decision - target_num
        elif decision < target_num:
            # Not yet running first, then the newest (deployment_scheduler.py:1325-1387).
            order = [k for k in reversed(size) if k.state != "ready"] + [
                k for k in reversed(size) if k.state == "ready"
            ]
            out.release = order[: target_num - decision]
        return out


def _at(series: list[tuple[float, int]], t: float) -> int:
    """A series' value at t: its last sample at or before t, 0 before its first."""
    value = 0
    for ts, v in series:
        if ts > t:
            break
        value = v
    return value
