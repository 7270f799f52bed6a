"""CATO's slack-aware Replica Router (Algorithm 1 of PAPER.md)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers.base import AT_RISK, ON_TIME, VIOLATED, Route


class CatoRouterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CatoRouter:
    """Route by remaining slack s = D_r - now against each replica's W_k and E_k = W_k + T_r,k.

    Violated requests go first to the shortest wait; at-risk ones to the earliest expected
    finish; on-time ones to the least-waiting replica that still meets the deadline. Ties
    in W_k (often all 0 when no queue has formed) go to the smaller E_k, and full ties to
    the replicas in turn, so equal replicas share the load instead of the first one taking
    it all (our choice; the paper is silent).
    """

    name = "cato"
    by_deadline = True

    def __init__(self, params: CatoRouterParams | None = None, seed: int = 0):
        self.params = params or CatoRouterParams()
        self._turn = 0  # where the scan starts: full ties rotate over the replicas

    def route(self, r: LLMRequest, replicas: Sequence[ReplicaState], now: float) -> Route:
        slack = r.deadline_s - now
        if slack <= 0:
            waits = [(k.wait_s(now), i) for i, k in enumerate(replicas)]
            w, i = min(waits)
            return Route(replicas[i], VIOLATED, w)
        n = len(replicas)
        self._turn = (self._turn + 1) % n if n else 0
        best, best_e, best_w = replicas[0], float("inf"), 0.0
        fit, fit_key = None, (float("inf"), float("inf"))
        for i in range(n):
            k = replicas[(self._turn + i) % n]
            w = k.wait_s(now)
            e = w + k.service_s(r)
            if e < best_e:
                best, best_e, best_w = k, e, w
            if e <= slack and (w, e) < fit_key:
                fit, fit_key = k, (w, e)
        if fit is None:
            return Route(best, AT_RISK, best_w)
        return Route(fit, ON_TIME, fit_key[0])
