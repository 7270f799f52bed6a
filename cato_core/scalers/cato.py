"""CATO's violation-driven Resource Provisioner (Algorithm 2 of PAPER.md).

The paper does not publish its parameter values; the defaults below are ours, chosen so a
burst of violations adds replicas within a few seconds and an idle replica is given back
after half a minute. All are configurable per experiment.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from cato_core.routers.base import AT_RISK
from cato_core.scalers.base import ScaleDecision, active


class CatoScalerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window_s: float = Field(default=2.0, gt=0)  # ours
    max_exceeded_proportion: float = Field(default=0.1, ge=0, le=1)  # ours
    max_exceeded_times: int = Field(default=2, ge=1)  # ours
    scale_per_violation: float = Field(default=0.5, gt=0)  # ours
    idle_timeout_s: float = Field(default=30.0, ge=0)  # ours
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)  # None: as many as accelerators allow


class CatoScaler:
    name = "cato"
    drain_timeout_s = None

    def __init__(self, params: CatoScalerParams | None = None):
        self.params = params or CatoScalerParams()
        self.interval_s = self.params.window_s
        self._n = 0  # LLM requests routed in the window
        self._v = 0  # of which routed violated or at risk
        self._exceeded = 0
        self._last_violation_s = -math.inf

    def on_routed(self, r, priority: int, now: float) -> None:
        self._n += 1
        if priority <= AT_RISK:
            self._v += 1
            self._last_violation_s = now

    def decide(self, now, replicas, free, pending) -> ScaleDecision:
        p = self.params
        n, v = self._n, self._v
        self._n = self._v = 0
        size = active(replicas)
        idle = [k for k in size if k.state == "ready" and k.ongoing == 0]
        self._exceeded = self._exceeded + 1 if n > 0 and v / n > p.max_exceeded_proportion else 0
        decision = ScaleDecision()
        if self._exceeded >= p.max_exceeded_times and v > len(idle):
            room = free if p.max_replicas is None else min(free, p.max_replicas - len(size))
            decision.add = max(0, min(math.ceil(p.scale_per_violation * (v - len(idle))), room))
            self._exceeded = 0
        # Give back replicas idle for idle_timeout_s with no violation since they went idle.
        spare = len(size) + decision.add - p.min_replicas
        for k in sorted(idle, key=lambda k: k.idle_since):
            if spare <= 0:
                break
            quiet_since = max(k.idle_since, self._last_violation_s)
            if now - quiet_since >= p.idle_timeout_s:
                decision.release.append(k)
                spare -= 1
        return decision
