"""Round Robin: the ready replicas in turn, FIFO queues."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers.base import ON_TIME, Route


class RoundRobinParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoundRobinRouter:
    name = "round_robin"
    by_deadline = False

    def __init__(self, params: RoundRobinParams | None = None, seed: int = 0):
        self.params = params or RoundRobinParams()
        self._next: dict[str, int] = {}  # per model

    def route(self, r: LLMRequest, replicas: Sequence[ReplicaState], now: float) -> Route:
        i = self._next.get(r.model, 0)
        self._next[r.model] = i + 1
        return Route(replicas[i % len(replicas)], ON_TIME)
