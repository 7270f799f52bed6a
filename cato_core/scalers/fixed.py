"""A fixed replica count: the experiment's initial replicas, never changed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from cato_core.scalers.base import ScaleDecision


class FixedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FixedScaler:
    name = "fixed"
    interval_s = None
    drain_timeout_s = None

    def __init__(self, params: FixedParams | None = None):
        self.params = params or FixedParams()

    def on_routed(self, r, priority, now) -> None:
        pass

    def decide(self, now, replicas, free, pending) -> ScaleDecision:
        return ScaleDecision()
