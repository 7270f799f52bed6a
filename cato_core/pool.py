"""The replicas of one model and the calls held back from them: the bookkeeping both drivers share.

Like the base of Ray Serve's request router (it owns pending requests and their backoff)
and Vidur's global scheduler (it owns the queue, so a policy writes only its decision),
the pool owns everything around a routing decision; the router only chooses. It keeps:

- the replicas not yet released, in the order they were asked for, and the ready ones
  (routable) in that same order, so routing does not depend on which came up first; the
  ready list (cato_core.ready_index.ReadyReplicas) also indexes its quiet replicas, which
  lets the cato router decide without scanning them all;
- calls held while no replica is ready (released to the router when one becomes ready)
  and calls the router told to retry later (pow2's backoff);
- the scaler's inputs: ``pending`` is every call of the model the pool holds and no
  replica's queue has yet (held or retrying), one meaning in sim and live;
- each replica's lifecycle, starting -> ready -> draining -> released.

A driver brings time and I/O through three callables: ``call_later(delay_s, fn)`` (call
``fn(now)`` after that many seconds), ``dispatch(replica, request)`` (a request was queued
on this replica: it may take work) and ``reject(request)`` (no replica is ready or starting,
and none will be: fail the call). It reports back with ``mark_ready``, ``started``,
``call_ended`` and ``fail``. ``on_released(replica)`` tells it to free what the replica held.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from functools import partial

from cato_core.profile import DeviceProfile
from cato_core.ready_index import ReadyReplicas
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers.base import Retry, Router
from cato_core.scalers.base import ScaleDecision, Scaler


def _ignore(*_args) -> None:
    pass


class ModelPool:
    def __init__(
        self,
        model: str,
        profile: DeviceProfile,
        max_num_seqs: int,
        router: Router,
        scaler: Scaler,
        *,
        call_later: Callable[[float, Callable[[float], None]], None],
        dispatch: Callable[[ReplicaState, LLMRequest], None],
        reject: Callable[[LLMRequest], None] = _ignore,
        on_released: Callable[[ReplicaState], None] = _ignore,
    ):
        self.model, self.profile, self.max_num_seqs = model, profile, max_num_seqs
        self.router, self.scaler = router, scaler
        self.call_later, self.dispatch, self.reject, self.on_released = call_later, dispatch, reject, on_released
        self.replicas: list[ReplicaState] = []  # not released, in the order asked for
        self.history: list[ReplicaState] = []  # every replica ever asked for
        # routable, in the order asked for; indexes its quiet replicas for the cato router
        self.ready = ReadyReplicas()
        self.held: list[LLMRequest] = []  # no replica was ready
        self.retrying = 0  # told by the router to try again later
        self._order: dict[str, int] = {}  # replica id -> position in history

    # -- replicas ----------------------------------------------------------------------
    def new_replica(self, replica_id: str, now: float) -> ReplicaState:
        """A replica asked for now: starting, provisioned from this moment."""
        k = ReplicaState(
            replica_id, self.model, self.profile, self.max_num_seqs, by_deadline=self.router.by_deadline, asked_s=now
        )
        self._order[replica_id] = len(self.history)
        self.replicas.append(k)
        self.history.append(k)
        return k

    def mark_ready(self, k: ReplicaState, now: float) -> bool:
        """The replica can take work; held calls are routed again. False if it was released meanwhile."""
        if k.state != "starting":
            return False
        k.mark_ready(now)
        i = bisect.bisect(self.ready, self._order[k.id], key=lambda x: self._order[x.id])
        self.ready.insert(i, k)  # rebuilds the index (rare: a replica became ready)
        held, self.held = self.held, []
        for r in held:
            self.submit(r, now)
        return True

    def release(self, k: ReplicaState, now: float) -> None:
        """Stop routing to it; it is released once its queue and running calls are done."""
        if k.state == "ready":
            self.ready.remove(k)
        k.drain()
        if k.state == "draining" and k.ongoing == 0:
            self._finalize(k, now)

    def fail(self, k: ReplicaState, now: float) -> None:
        """A dead replica: out of routing now; the calls queued on it are routed again."""
        if k.state == "released":
            return
        if k.state == "ready":
            self.ready.remove(k)
        queue = k.queue
        queued = [queue.pop() for _ in range(len(queue))]
        self._finalize(k, now)
        for r in queued:
            self.submit(r, now)

    def _finalize(self, k: ReplicaState, now: float) -> None:
        k.release(now)
        self.replicas.remove(k)
        self.on_released(k)

    @property
    def starting(self) -> int:
        return sum(k.state == "starting" for k in self.replicas)

    # -- calls -------------------------------------------------------------------------
    def submit(self, r: LLMRequest, now: float) -> None:
        """Route a call (first time, after a Retry, or after a failed attempt) or hold it."""
        if r.cancelled:
            return
        ready = [k for k in self.ready if k.id not in r.avoid] if r.avoid else self.ready
        if not ready:
            # Wait for a replica that is starting or (first attempt) one the scaler may add;
            # a call with nowhere to go fails now rather than wait for nothing.
            if self.starting or (not r.avoid and self.scaler.interval_s is not None):
                self.held.append(r)
            else:
                self.reject(r)
            return
        choice = self.router.route(r, ready, now)
        if isinstance(choice, Retry):
            self.retrying += 1
            self.call_later(choice.delay_s, partial(self._retry, r))
            return
        k = choice.replica
        r.priority, r.replica = choice.priority, k
        rec = r.record
        if rec is not None:
            rec.replica, rec.priority, rec.queued_s = k.id, choice.priority, now
            rec.slack_s = r.deadline_s - now
            rec.predicted_wait_s = choice.wait_s if choice.wait_s is not None else k.wait_s(now)
        self.scaler.on_routed(r, choice.priority, now)
        k.enqueue(r)
        k.requests += 1
        self.dispatch(k, r)

    def _retry(self, r: LLMRequest, now: float) -> None:
        self.retrying -= 1
        self.submit(r, now)

    def started(self, r: LLMRequest, now: float) -> None:
        """The engine took the call from its replica's queue."""
        if r.record is not None:
            r.record.start_s = now

    def call_ended(self, k: ReplicaState, now: float) -> None:
        """A call left the replica (its ReplicaState already knows): a drained replica is released."""
        if k.state == "draining" and k.ongoing == 0:
            self._finalize(k, now)

    # -- scaling -----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Calls of this model the pool holds that no replica's queue has yet."""
        return len(self.held) + self.retrying

    def scale(self, now: float, free: int, add: Callable[[], None]) -> ScaleDecision:
        """Ask the scaler and carry out its decision: ``add()`` asks the driver for one
        replica (which calls new_replica); releases drain here, after the additions."""
        decision = self.scaler.decide(now, self.replicas, free, self.pending)
        for _ in range(decision.add):
            add()
        for k in decision.release:
            self.release(k, now)
        return decision

    def in_flight(self) -> int:
        """Calls of this model anywhere: held, retrying, queued or running."""
        return self.pending + sum(k.ongoing for k in self.replicas)
