"""Ray Serve's default router: power of two choices with a cap on ongoing requests.

Follows ray/python/ray/serve/_private/request_router/pow_2_router.py and the backoff of
request_router.py (Ray 2.4x-2.60): sample two distinct replicas, send to the one with fewer
ongoing requests if it is below max_ongoing_requests; if neither has room, retry after a
backoff that starts at 0.025 s and doubles up to 0.5 s. Replica queues are FIFO.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers.base import ON_TIME, Retry, Route


class Pow2Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_ongoing_requests: int = Field(default=5, ge=1)  # Ray Serve's default deployment option
    initial_backoff_s: float = Field(default=0.025, gt=0)  # request_router.py
    backoff_multiplier: float = Field(default=2.0, ge=1)  # request_router.py
    max_backoff_s: float = Field(default=0.5, gt=0)  # request_router.py


class Pow2Router:
    name = "pow2"
    by_deadline = False

    def __init__(self, params: Pow2Params | None = None, seed: int = 0):
        self.params = params or Pow2Params()
        self._rng = random.Random(seed)

    def route(self, r: LLMRequest, replicas: Sequence[ReplicaState], now: float) -> Route | Retry:
        p = self.params
        pair = self._rng.sample(replicas, 2) if len(replicas) > 1 else list(replicas)
        best = min(pair, key=lambda k: k.ongoing)
        if best.ongoing < p.max_ongoing_requests:
            r.attempts = 0
            return Route(best, ON_TIME)
        delay = min(p.initial_backoff_s * p.backoff_multiplier**r.attempts, p.max_backoff_s)
        r.attempts += 1
        return Retry(delay)
