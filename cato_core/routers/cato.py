"""CATO's slack-aware Replica Router (Algorithm 1 of PAPER.md).

``CatoRouter.route_scan`` is the reference: it evaluates every ready replica. ``route``
chooses exactly what ``route_scan`` chooses (same replica, priority and wait_s, same
rotation ``_turn`` afterwards) without evaluating them all when the replicas come as the
pool's ready list (cato_core.ready_index.ReadyReplicas, which indexes the quiet replicas);
any other sequence, such as the filtered list of a retried call, gets the scan.

Why the fast answers are exact (float arithmetic included). Take replicas that share one
profile with finite coefficients >= 0. For a request r, T(n, c) = ReplicaState.service_s
with n running requests holding c context tokens is nondecreasing in n and c in floats
(each operation is monotone with such coefficients, and so is rounding; estimates are
taken to be finite, as they are for any real profile and prompt). A quiet replica
(nothing queued or running, sums at exactly zero) has W = 0.0 and E = 0.0 + T0 = T0, with
T0 = T(0, 0). Every replica outside the index's quiet list and suspects
(ReadyReplicas.suspects) runs >= 1 request, each with a prompt of >= 1 token, and has a
queued-prefill sum >= 0: so W >= 0 and E = fl(W + T) >= T >= Tb := T(1, 1). Then:

- slack > 0, some replica quiet, and Tb > T0 (checked per request; in practice it holds
  when decode_ctx_s > 0, and otherwise when one more token grows the linear part): every
  such replica has E > T0 and, W being >= 0, (W, E) > (0, T0). It never fits a slack
  below T0, never ties the least E (T0, held by every quiet replica) and never ties the
  least (W, E) among fitting replicas ((0, T0), held by every quiet one when T0 <= slack).
  So the scan's answer is the scan's answer over the first quiet replica in the scan's
  rotated order plus the suspects (usually none), evaluated in that same order.
- slack <= 0 (violated: argmin (W, index)) and no suspect with a negative queued sum: every
  W is >= 0, so the first replica with W == 0.0 in list order is the answer; the loop
  stops there (at the latest at the first quiet replica), else it is the whole scan.

What falls back to the scan: no quiet replica with slack > 0 (every replica busy: the
overloaded case), Tb == T0 (decode_ctx_s = 0 and a floored linear part that one token
does not lift), a violated request while some queued sum has drifted below zero, a slack
that is not a number, and any list that is not an intact ReadyReplicas. The overloaded
case has no exact shortcut yet: a search in order of a lower bound of W would need that
order kept on every enqueue, take and finish, and in loaded states most busy replicas
have W = 0 and differ only by T(n, c), so a bound on W alone prunes little.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from cato_core.ready_index import ReadyReplicas
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers.base import AT_RISK, ON_TIME, VIOLATED, Route


class CatoRouterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _LeastBusy:
    """The least busy state of a replica outside the quiet list and the suspects: 1 running
    request holding 1 token of context. ReplicaState.service_s runs on it unchanged, so Tb
    comes from the very formula the scan uses."""

    __slots__ = ("profile", "running", "_running_context")

    def __init__(self, profile):
        self.profile, self.running, self._running_context = profile, 1, 1


_service_s = ReplicaState.service_s


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
        self._probe: _LeastBusy | None = None

    def route(self, r: LLMRequest, replicas: Sequence[ReplicaState], now: float) -> Route:
        """The decision of ``route_scan``, found through the ready list's index when it can
        be proved equal (module docstring); otherwise by the scan itself."""
        if type(replicas) is ReadyReplicas and not replicas.broken and replicas:
            choice = self._route_indexed(r, replicas, now)
            if choice is not None:
                return choice
        return self.route_scan(r, replicas, now)

    def route_scan(self, r: LLMRequest, replicas: Sequence[ReplicaState], now: float) -> Route:
        """The reference: evaluate W and E on every replica."""
        slack = r.deadline_s - now
        if slack <= 0:
            waits = [(k.wait_s(now), i) for i, k in enumerate(replicas)]
            w, i = min(waits)
            return Route(replicas[i], VIOLATED, w)
        n = len(replicas)
        turn = self._turn = (self._turn + 1) % n if n else 0
        return _choose(r, [replicas[(turn + i) % n] for i in range(n)], slack, now)

    def _route_indexed(self, r: LLMRequest, ready: ReadyReplicas, now: float) -> Route | None:
        """route_scan's decision from the quiet index, or None when it cannot be proved."""
        slack = r.deadline_s - now
        suspects = ready.suspects()
        if slack <= 0:
            if any(k._queued_prefill_s < 0.0 for k in suspects):
                return None  # some W may be < 0: the first W == 0 is not the least
            best, best_w = None, float("inf")
            for k in ready:
                w = k.wait_s(now)
                if w == 0.0:
                    return Route(k, VIOLATED, w)
                if w < best_w:
                    best, best_w = k, w
            if best is None:
                return None  # every W is inf or not a number: leave it to the scan
            return Route(best, VIOLATED, best_w)
        quiet = ready.quiet
        if not quiet or not slack > 0:
            return None
        n = len(ready)
        turn = (self._turn + 1) % n
        first = quiet[bisect_left(quiet, turn) % len(quiet)]  # the first quiet one from turn on
        q = ready[first]
        t0 = q.service_s(r)
        probe = self._probe
        if probe is None or probe.profile is not q.profile:
            probe = self._probe = _LeastBusy(q.profile)
        if not _service_s(probe, r) > t0:
            return None  # a busy replica might tie the quiet ones
        if not suspects:  # the usual case: _choose over q alone, inlined (t0 is a number here)
            self._turn = turn
            w = q._queued_prefill_s  # q.wait_s(now): q runs nothing
            return Route(q, ON_TIME if w + t0 <= slack else AT_RISK, w)
        # The scan over q and the suspects, in the scan's own order from `turn`.
        order = sorted({(first - turn) % n} | {(ready.position(k) - turn) % n for k in suspects})
        self._turn = turn
        return _choose(r, [ready[(turn + d) % n] for d in order], slack, now)


def _choose(r: LLMRequest, candidates: list[ReplicaState], slack: float, now: float) -> Route:
    """Algorithm 1 for slack > 0 over ``candidates`` in the scan's rotated order: the least
    (W, E) among those with E <= slack (on time), else the least E (at risk); the first
    candidate wins a tie."""
    best, best_e, best_w = candidates[0], float("inf"), 0.0
    fit, fit_key = None, (float("inf"), float("inf"))
    for k in candidates:
        w = k.wait_s(now)
        e = w + k.service_s(r)
        if e < best_e:
            best, best_e, best_w = k, e, w
        if e <= slack and (w, e) < fit_key:
            fit, fit_key = k, (w, e)
    if fit is None:
        return Route(best, AT_RISK, best_w)
    return Route(fit, ON_TIME, fit_key[0])
