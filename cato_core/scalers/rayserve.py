"""Ray Serve's default autoscaling policy, driven on simulated or live replicas.

Follows ray/python/ray/serve/autoscaling_policy.py (replica_queue_length_autoscaling_policy
and _calculate_desired_num_replicas, Ray 2.4x-2.60): every control-loop tick (0.1 s) take the
mean total ongoing requests over look_back_period_s, desired = ceil(cur * (1 + (ongoing / cur
/ target - 1) * factor)); act only after upscale_delay_s (downscale_delay_s) of consecutive
decisions in the same direction; clip to [min_replicas, max_replicas].
"""

from __future__ import annotations

import math
from collections import deque

from pydantic import BaseModel, ConfigDict, Field

from cato_core.scalers.base import ScaleDecision, active


class RayServeScalerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_ongoing_requests: float = Field(default=2.0, gt=0)  # Ray's AutoscalingConfig default
    look_back_period_s: float = Field(default=30.0, gt=0)  # Ray's default
    upscale_delay_s: float = Field(default=30.0, ge=0)  # Ray's default
    downscale_delay_s: float = Field(default=600.0, ge=0)  # Ray's default
    upscaling_factor: float = Field(default=1.0, gt=0)  # Ray: smoothing_factor 1.0
    downscaling_factor: float = Field(default=1.0, gt=0)  # Ray: smoothing_factor 1.0
    control_loop_interval_s: float = Field(default=0.1, gt=0)  # CONTROL_LOOP_INTERVAL_S
    min_replicas: int = Field(default=1, ge=0)  # Ray's default
    max_replicas: int | None = Field(default=None, ge=1)  # None: as many as accelerators allow


class RayServeScaler:
    name = "rayserve"

    def __init__(self, params: RayServeScalerParams | None = None):
        self.params = params or RayServeScalerParams()
        self.interval_s = self.params.control_loop_interval_s
        self._samples: deque[tuple[float, int]] = deque()  # (time, total ongoing)
        self._sum = 0
        self._counter = 0  # >0: consecutive up decisions, <0: down

    def on_routed(self, r, priority, now) -> None:
        pass

    def desired(self, cur: int, mean_ongoing: float) -> int:
        p = self.params
        if cur == 0:
            return 1 if mean_ongoing > 0 else 0
        error = mean_ongoing / cur / p.target_ongoing_requests
        factor = p.upscaling_factor if error >= 1 else p.downscaling_factor
        return math.ceil(cur * (1 + (error - 1) * factor))

    def decide(self, now, replicas, free, pending) -> ScaleDecision:
        p = self.params
        size = active(replicas)
        cur = len(size)
        ongoing = pending + sum(k.ongoing for k in replicas if k.state == "ready")
        self._samples.append((now, ongoing))
        self._sum += ongoing
        while self._samples[0][0] < now - p.look_back_period_s:
            self._sum -= self._samples.popleft()[1]
        upper = cur + free if p.max_replicas is None else min(p.max_replicas, cur + free)
        want = max(p.min_replicas, min(upper, self.desired(cur, self._sum / len(self._samples))))
        decision = ScaleDecision()
        if want > cur:
            self._counter = max(self._counter, 0) + 1
            if self._counter * p.control_loop_interval_s > p.upscale_delay_s:
                decision.add, self._counter = want - cur, 0
        elif want < cur:
            self._counter = min(self._counter, 0) - 1
            if -self._counter * p.control_loop_interval_s > p.downscale_delay_s:
                # Ray stops the replicas with the fewest ongoing requests first (starting ones first).
                order = sorted(size, key=lambda k: (k.state == "ready", k.ongoing))
                decision.release, self._counter = order[: cur - want], 0
        else:
            self._counter = 0
        return decision
