"""The replicas of one model and the calls held back from them: the bookkeeping both drivers share.

Like the base of Ray Serve's request router (it owns pending requests and their backoff)
and Vidur's global scheduler (it owns the queue, so a policy writes only its decision),
the pool owns everything around a routing decision; the router only chooses. It keeps:

- the replicas not yet released, in the order they were asked for, and the ready ones
  (routable) in that same order, so routing does not depend on which came up first; the
  ready list (cato_core.ready_index.ReadyReplicas) also indexes its quiet replicas, which
  lets the cato router decide without scanning them all;
- calls held while no replica is ready (released to the router when one becomes ready)
  and the router queue: calls the router told to retry later (pow2), served as Ray's
  FIFOMixin serves them (ray/serve/_private/request_router/request_router.py:428-460,
  1266-1404): at most ``router.routing_tasks(ready)`` of them are in routing at once, each
  retrying on the router's backoff, and whichever task finds a replica gives it to the
  OLDEST waiting call, not necessarily its own; a new call queues behind them;
- the scaler's inputs: ``pending`` is every call of the model the pool holds and no
  replica's queue has yet (held or retrying), one meaning in sim and live;
- each replica's lifecycle, starting -> ready -> draining -> released; a scaler with a
  ``drain_timeout_s`` (Ray's graceful_shutdown_timeout_s) has a replica still draining
  after that long force-stopped through the driver's ``stop``.

A driver brings time and I/O through three callables: ``call_later(delay_s, fn)`` (call
``fn(now)`` after that many seconds), ``dispatch(replica, request)`` (a request was queued
on this replica: it may take work) and ``reject(request)`` (no replica is ready or starting,
and none will be: fail the call). It reports back with ``mark_ready``, ``started``,
``call_ended`` and ``fail``. ``on_released(replica)`` tells it to free what the replica held;
``stop(replica, now)``, when given, force-stops a replica: the driver fails the calls it
still holds (without it, a draining replica is always waited for).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from functools import partial

from cato_core.profile import DeviceProfile
from cato_core.ready_index import ReadyReplicas
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers.base import Retry, Route, Router
from cato_core.scalers.base import ScaleDecision, Scaler


def _ignore(*_args) -> None:
    pass


class _Task:
    """A routing task of the router queue: the call it routes, until it is cancelled."""

    __slots__ = ("r", "alive")

    def __init__(self, r: LLMRequest | None):
        self.r, self.alive = r, True


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
        stop: Callable[[ReplicaState, float], None] | None = None,
    ):
        self.model, self.profile, self.max_num_seqs = model, profile, max_num_seqs
        self.router, self.scaler = router, scaler
        self.call_later, self.dispatch, self.reject, self.on_released = call_later, dispatch, reject, on_released
        self.stop = stop
        self.replicas: list[ReplicaState] = []  # not released, in the order asked for
        self.history: list[ReplicaState] = []  # every replica ever asked for
        # routable, in the order asked for; indexes its quiet replicas for the cato router
        self.ready = ReadyReplicas()
        self.held: list[LLMRequest] = []  # no replica was ready
        # The router queue (calls told to retry), oldest first, and those no routing task has.
        self.waiting: deque[LLMRequest] = deque()
        self._unrouted: deque[LLMRequest] = deque()
        self._queued: dict[int, _Task | None] = {}  # id(call) in the router queue -> its routing task
        self._tasks = 0  # routing tasks alive
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
        self._start_tasks(now)  # Ray: update_replicas starts routing tasks (request_router.py:950-955)
        return True

    def release(self, k: ReplicaState, now: float) -> None:
        """Stop routing to it; it is released once its queue and running calls are done."""
        if k.state == "ready":
            self.ready.remove(k)
        k.drain()
        if k.state == "draining" and k.ongoing == 0:
            self._finalize(k, now)
        elif k.state == "draining" and self.stop is not None:
            timeout = self.scaler.drain_timeout_s
            if timeout is not None:
                self.call_later(timeout, partial(self._force_stop, k))

    def _force_stop(self, k: ReplicaState, now: float) -> None:
        if k.state == "draining":
            self.stop(k, now)
            if k.state != "released":
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
        """Route a call (first time, after a failed attempt, or once a replica is ready) or hold it."""
        if r.cancelled:
            return
        ready = self._ready_for(r)
        if not ready:
            # Wait for a replica that is starting or (first attempt) one the scaler may add;
            # a call with nowhere to go fails now rather than wait for nothing.
            if self.starting or (not r.avoid and self.scaler.interval_s is not None):
                self.held.append(r)
            else:
                self.reject(r)
            return
        if self._queued:
            self._enqueue(r, now)  # FIFO: behind the calls the router already holds
            return
        choice = self.router.route(r, ready, now)
        if isinstance(choice, Retry):
            self._enqueue(r, now, task=_Task(r), delay_s=choice.delay_s)
            return
        self._place(r, choice, now)

    def _ready_for(self, r: LLMRequest):
        return [k for k in self.ready if k.id not in r.avoid] if r.avoid else self.ready

    def _place(self, r: LLMRequest, choice: Route, now: float) -> None:
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

    # -- the router queue (Ray's pending requests and routing tasks) ---------------------
    def _enqueue(self, r: LLMRequest, now: float, task: _Task | None = None, delay_s: float = 0.0) -> None:
        """Add a call to the router queue; with ``task``, it is already in routing (it just
        failed its first try) and tries again after ``delay_s``."""
        self.waiting.append(r)
        self._queued[id(r)] = task
        if task is None:
            self._unrouted.append(r)
            self._start_tasks(now)
        else:
            self._tasks += 1
            self.call_later(delay_s, partial(self._run_task, task))

    def _target_tasks(self) -> int:
        """Ray's target_num_routing_tasks (request_router.py:782-787)."""
        return min(len(self._queued), self.router.routing_tasks(len(self.ready)))

    def _start_tasks(self, now: float) -> None:
        if not self._queued:
            return
        for _ in range(self._target_tasks() - self._tasks):
            self._tasks += 1
            self.call_later(0.0, partial(self._run_task, _Task(None)))

    def _run_task(self, task: _Task, now: float) -> None:
        """One routing task (request_router.py:1262-1363): route its call; a replica found
        goes to the oldest waiting call; once its own call is placed, take the next."""
        if not task.alive:
            return
        while True:
            r = task.r
            if r is not None and r.cancelled:
                self._queued.pop(id(r), None)
            if r is None or self._queued.get(id(r), False) is not task:
                if self._tasks > self._target_tasks():
                    break
                r = task.r = self._next_unrouted(task)
                if r is None:
                    break
            ready = self._ready_for(r)
            if not ready:  # no replica: the call waits for one (mark_ready restarts routing)
                self._queued[id(r)] = None
                self._unrouted.appendleft(r)
                if not self.starting and self.scaler.interval_s is None:
                    self._reject_queue()
                break
            choice = self.router.route(r, ready, now)
            if isinstance(choice, Retry):
                self.call_later(choice.delay_s, partial(self._run_task, task))
                return
            oldest = self._oldest_for(choice.replica)
            other = self._queued.pop(id(oldest))
            self._place(oldest, choice, now)
            if other is not None and other is not task:
                other.alive = False  # Ray cancels the routing task of the call served
                self._tasks -= 1
                self._start_tasks(now)
            if oldest is not r:
                self.call_later(self.router.backoff(r).delay_s, partial(self._run_task, task))
                return
        task.alive = False
        self._tasks -= 1
        self._start_tasks(now)

    def _next_unrouted(self, task: _Task) -> LLMRequest | None:
        while self._unrouted:
            r = self._unrouted.popleft()
            if id(r) in self._queued and not r.cancelled:
                self._queued[id(r)] = task
                r.attempts = 0
                return r
            self._queued.pop(id(r), None)
        return None

    def _oldest_for(self, k: ReplicaState) -> LLMRequest:
        """The oldest waiting call that may go to k (request_router.py:447-460)."""
        waiting, queued = self.waiting, self._queued
        while waiting and (id(waiting[0]) not in queued or waiting[0].cancelled):
            queued.pop(id(waiting.popleft()), None)  # served or cancelled: dropped lazily
        return next(r for r in waiting if id(r) in queued and not r.cancelled and k.id not in r.avoid)

    def _reject_queue(self) -> None:
        waiting = [r for r in self.waiting if id(r) in self._queued and not r.cancelled]
        self.waiting.clear()
        self._unrouted.clear()
        self._queued.clear()
        for r in waiting:
            self.reject(r)

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
    def retrying(self) -> int:
        """Calls in the router queue (told to retry)."""
        return sum(1 for r in self.waiting if id(r) in self._queued and not r.cancelled)

    @property
    def pending(self) -> int:
        """Calls of this model the pool holds that no replica's queue has yet."""
        return sum(1 for r in self.held if not r.cancelled) + self.retrying

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
