"""What every scaler answers: replicas to add and replicas to release, for one model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest


@dataclass
class ScaleDecision:
    add: int = 0
    release: list[ReplicaState] = field(default_factory=list)


class Scaler(Protocol):
    name: str
    interval_s: float | None  # how often the driver calls decide(); None: never
    drain_timeout_s: float | None  # a replica still draining this long is force-stopped; None: never

    def on_routed(self, r: LLMRequest, priority: int, now: float) -> None: ...

    def decide(self, now: float, replicas: Sequence[ReplicaState], free: int, pending: int) -> ScaleDecision:
        """``replicas``: the model's replicas not yet released (starting, ready, draining);
        ``free``: how many more replicas of the model fit on free accelerators;
        ``pending``: requests the router holds back (no replica had room)."""
        ...


def active(replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
    """Replicas that count towards the model's size: starting or ready, not draining."""
    return [k for k in replicas if k.state in ("starting", "ready")]
