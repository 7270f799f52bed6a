"""What every router answers: where a request goes and at what priority, or to retry later."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest

# Priorities of Algorithm 1; a lower number is served first.
VIOLATED, AT_RISK, ON_TIME = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Route:
    replica: ReplicaState
    priority: int
    wait_s: float | None = None  # W_k of the choice, when the router computed it (saves a recount)


@dataclass(frozen=True, slots=True)
class Retry:
    """No replica can take the request now; ask again after ``delay_s``.

    A router that answers Retry also has ``backoff(r) -> Retry`` (the next wait of r's
    routing task when the replica it found went to an older call: the pool serves its
    router queue oldest first) and ``routing_tasks(ready) -> int`` (how many held calls
    may be in routing at once); see cato_core.routers.pow2.
    """

    delay_s: float


class Router(Protocol):
    name: str
    by_deadline: bool  # replica queues order by (priority, deadline) rather than FIFO

    def route(self, r: LLMRequest, replicas: Sequence[ReplicaState], now: float) -> Route | Retry:
        """Choose among the ready replicas of r's model (never empty)."""
        ...
