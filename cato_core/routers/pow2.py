"""Ray Serve's default router: power of two choices with a cap on ongoing requests.

Follows Ray 2.60 (paths under the wheel's ``ray/``): PowerOfTwoChoicesRequestRouter
(serve/_private/request_router/pow_2_router.py:27-29, 89-104) samples two distinct ready
replicas as Ray does (two replicas: a random order; more: i, then j != i); of those below
``max_ongoing_requests`` the one with fewer ongoing requests wins, the first sampled on a
tie (request_router.py:1077-1114, strict ``<``). Ongoing counts are exact: Ray's per-router
cache is +1 on send and -1 on done (request_router.py:875-899), exact for one router; its
10 s staleness and probe RPCs are not modelled, nor locality (one node).

Neither has room: the call waits in the pool's router queue (cato_core.pool) and a routing
task tries again. Its waits follow request_router.py:1244-1253: the first retry is
immediate, then ``initial_backoff_s * multiplier**attempt`` capped at ``max_backoff_s``
(0, 0.025, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5, ...).
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
    max_ongoing_requests: int = Field(default=5, ge=1)  # ray/serve/_private/constants.py:290
    initial_backoff_s: float = Field(default=0.025, gt=0)  # ray/serve/_private/constants.py:565
    backoff_multiplier: float = Field(default=2.0, ge=1)  # ray/serve/_private/constants.py:568
    max_backoff_s: float = Field(default=0.5, gt=0)  # ray/serve/_private/constants.py:571
    # routing tasks at once: min(cap, 2 x replicas), serve/_private/request_router/request_router.py:477, 779
    max_routing_tasks: int = Field(default=50, ge=1)


class Pow2Router:
    name = "pow2"
    by_deadline = False

    def __init__(self, params: Pow2Params | None = None, seed: int = 0):
        self.params = params or Pow2Params()
        self._rng = random.Random(seed)

    def sample(self, replicas: Sequence[ReplicaState]) -> tuple[ReplicaState, ReplicaState | None]:
        """The two candidates, in Ray's order (pow_2_router.py:89-104); one replica: (it, None)."""
        n = len(replicas)
        if n > 2:
            # randrange(n), then randrange(n - 1): CPython's draw for each (getrandbits of
            # n's bit length until below n), without randrange's argument checks, which cost
            # more than the draw; the same numbers from the same seed
            bits = self._rng.getrandbits
            k = n.bit_length()
            i = bits(k)
            while i >= n:
                i = bits(k)
            m = n - 1
            k = m.bit_length()
            j = bits(k)
            while j >= m:
                j = bits(k)
            return replicas[i], replicas[j + 1 if j >= i else j]
        if n == 2:
            return (replicas[0], replicas[1]) if self._rng.getrandbits(1) else (replicas[1], replicas[0])
        return replicas[0], None

    def route(self, r: LLMRequest, replicas: Sequence[ReplicaState], now: float) -> Route | Retry:
        cap = self.params.max_ongoing_requests
        a, b = self.sample(replicas)
        if b is not None and b.ongoing < a.ongoing:  # the first sampled wins a tie
            a = b
        if a.ongoing < cap:
            return Route(a, ON_TIME)
        return self.backoff(r)

    def backoff(self, r: LLMRequest) -> Retry:
        """The wait before the routing task of ``r`` tries again; counts the attempt."""
        p = self.params
        n, r.attempts = r.attempts, r.attempts + 1
        if n == 0:
            return Retry(0.0)  # request_router.py:1244-1249: no sleep after the first try
        return Retry(min(p.initial_backoff_s * p.backoff_multiplier ** (n - 1), p.max_backoff_s))

    def routing_tasks(self, ready: int) -> int:
        """How many calls may be in routing at once (request_router.py:777-779)."""
        return min(self.params.max_routing_tasks, 2 * ready)
