"""Per-model routing and per-replica queues: the core's router over one ReplicaState per replica.

A call is routed into one replica's priority queue (or held: pow2's Retry, or no replica
ready yet). Each replica's dispatcher (:meth:`ModelPool.pump`) hands the head of its queue
to the waiting call whenever the replica has fewer than ``max_concurrency`` calls in
flight; the call then talks to the replica itself and reports back with :meth:`done`.
Everything here runs on the event loop without awaiting, so no lock is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cato_core.profile import DeviceProfile
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers import Retry, Router
from cato_core.scalers import Scaler
from cato_live.gateway.api_error import ApiError
from cato_live.gateway.call_record import CallRecord

if TYPE_CHECKING:
    import aiohttp

    from cato_live.gateway.prometheus import GatewayMetrics
    from cato_live.provisioners.base import ReplicaHandle


class Call:
    """One LLM call in the gateway: the core's request, the body to send, and its waiter."""

    __slots__ = ("r", "body", "path", "stream", "record", "give_up_s", "granted", "tried", "cancelled",
                 "last_error")

    def __init__(self, r: LLMRequest, body: dict[str, Any], path: str, stream: bool,
                 record: CallRecord, give_up_s: float):
        self.r, self.body, self.path, self.stream = r, body, path, stream
        self.record, self.give_up_s = record, give_up_s
        self.granted: asyncio.Future[LiveReplica] = asyncio.get_running_loop().create_future()
        self.tried: set[str] = set()  # replicas that failed it
        self.cancelled = False  # its waiter gave up: skip it wherever it is held
        self.last_error: str | None = None

    def new_attempt(self) -> None:
        self.granted = asyncio.get_running_loop().create_future()

    def reject(self, error: ApiError) -> None:
        if not self.granted.done():
            self.granted.set_exception(error)


class LiveReplica:
    """A backend replica as the gateway keeps it: policy state, handle, client, accounting."""

    def __init__(self, state: ReplicaState):
        self.state = state
        self.handle: ReplicaHandle | None = None
        self.client: aiohttp.ClientSession | None = None
        self.ready_s: float | None = None
        self.released_s: float | None = None
        self.requests = 0  # calls routed to it
        self.busy_s = 0.0  # time with at least one call in flight
        self._busy_since: float | None = None
        self.failed: str | None = None  # why it was taken out of routing

    @property
    def id(self) -> str:
        return self.state.id

    def row(self, now: float) -> dict:
        busy = self.busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)
        h = self.handle
        return {
            "replica_id": self.id, "model": self.state.model, "machine": h.machine if h else 0,
            "asked_s": self.state.asked_s, "ready_s": self.ready_s, "released_s": self.released_s,
            "busy_s": busy, "requests": self.requests,
            "state": "failed" if self.failed else self.state.state,
            "url": h.base_url if h else None, "error": self.failed,
            "meta": dict(h.meta) if h else {},
        }


class ModelPool:
    """The replicas of one model, the calls held back from them, and their dispatch."""

    def __init__(self, model: str, profile: DeviceProfile, max_concurrency: int, router: Router,
                 scaler: Scaler, clock: Callable[[], float], metrics: GatewayMetrics | None = None,
                 on_drained: Callable[[LiveReplica], None] | None = None):
        self.model, self.profile, self.max_concurrency = model, profile, max_concurrency
        self.router, self.scaler, self.clock, self.metrics = router, scaler, clock, metrics
        self.on_drained = on_drained or (lambda rep: None)
        self.replicas: list[LiveReplica] = []  # not released
        self.history: list[LiveReplica] = []  # every replica ever asked for
        self.by_id: dict[str, LiveReplica] = {}
        self.ready: list[ReplicaState] = []  # routable
        self.unrouted: list[Call] = []  # no replica was ready
        self.pending = 0  # held by the router's Retry

    # -- replicas ------------------------------------------------------------------------
    def new_replica(self, replica_id: str) -> LiveReplica:
        state = ReplicaState(replica_id, self.model, self.profile, self.max_concurrency,
                             by_deadline=self.router.by_deadline, asked_s=self.clock())
        rep = LiveReplica(state)
        self.replicas.append(rep)
        self.history.append(rep)
        self.by_id[replica_id] = rep
        return rep

    def mark_ready(self, rep: LiveReplica, handle: ReplicaHandle, client: aiohttp.ClientSession) -> None:
        now = self.clock()
        rep.handle, rep.client, rep.ready_s = handle, client, now
        rep.state.mark_ready(now)
        self.ready.append(rep.state)
        # In the order they were asked for, whichever came up first: routing is reproducible.
        order = {r.id: i for i, r in enumerate(self.history)}
        self.ready.sort(key=lambda k: order[k.id])
        waiting, self.unrouted = self.unrouted, []
        for call in waiting:
            self.submit(call)

    def release(self, rep: LiveReplica) -> None:
        """Stop routing to it; it is stopped once its queue and calls in flight are done."""
        s = rep.state
        if s.state == "ready":
            self.ready.remove(s)
        if s.state in ("starting", "ready"):
            s.state = "draining"
        if s.state == "draining" and s.ongoing == 0 and rep.handle is not None:
            self.finalize(rep)

    def finalize(self, rep: LiveReplica) -> None:
        """Released: it counts as provisioned until now."""
        if rep.state.state == "ready":
            self.ready.remove(rep.state)
        rep.state.state = "released"
        rep.released_s = self.clock()
        self._idle(rep, rep.released_s)
        if rep in self.replicas:
            self.replicas.remove(rep)
        self.on_drained(rep)

    def fail(self, rep: LiveReplica, reason: str) -> None:
        """Take a dead replica out of routing now; calls queued on it are routed again."""
        if rep.state.state == "released":
            return
        rep.failed = reason
        queue = rep.state.queue
        held = [queue.pop() for _ in range(len(queue))]
        self.finalize(rep)
        if self.metrics:
            self.metrics.replica_failed(self.model)
        for r in held:
            if not r.ref.cancelled:
                self.submit(r.ref)

    def states(self) -> list[ReplicaState]:
        """What the scaler sees: replicas starting, ready or draining."""
        return [rep.state for rep in self.replicas]

    def starting(self) -> int:
        return sum(rep.state.state == "starting" for rep in self.replicas)

    # -- calls ---------------------------------------------------------------------------
    def submit(self, call: Call) -> None:
        """Route a call (again, after a Retry or a failed attempt) or hold it."""
        if call.cancelled:
            return
        now = self.clock()
        ready = self.ready if not call.tried else [k for k in self.ready if k.id not in call.tried]
        if not ready:
            # Wait for a replica that is starting, or (a first attempt) one the scaler may add;
            # the call's request timeout bounds the wait. A retry with nowhere to go fails now.
            if self.starting() or (not call.tried and self.scaler.interval_s is not None):
                self.unrouted.append(call)
            elif call.tried:
                call.reject(ApiError(502, f"{call.last_error}; no other replica of {self.model!r} to retry on",
                                     "upstream_error"))
            else:
                call.reject(ApiError(503, f"no replica of model {self.model!r} is ready or starting",
                                     "unavailable_error"))
            return
        choice = self.router.route(call.r, ready, now)
        if isinstance(choice, Retry):
            self.pending += 1
            asyncio.get_running_loop().call_later(choice.delay_s, self._retry, call)
            return
        k, r, rec = choice.replica, call.r, call.record
        r.priority = choice.priority
        rec.replica, rec.priority, rec.queued_s = k.id, choice.priority, now
        rec.slack_s = r.deadline_s - now
        rec.predicted_wait_s = choice.wait_s if choice.wait_s is not None else k.wait_s(now)
        self.scaler.on_routed(r, choice.priority, now)
        k.enqueue(r)
        rep = self.by_id[k.id]
        rep.requests += 1
        if self.metrics:
            self.metrics.routed(self.model, choice.priority)
        self.pump(rep)

    def _retry(self, call: Call) -> None:
        self.pending -= 1
        self.submit(call)

    def pump(self, rep: LiveReplica) -> None:
        """The replica's dispatcher: hand queue heads to their calls while it has free slots."""
        s = rep.state
        if s.state not in ("ready", "draining"):
            return
        now = self.clock()
        while s.queue and s.running < self.max_concurrency:
            r = s.take(now)
            call: Call = r.ref
            if call.cancelled or call.granted.done():
                s.finish(r, now)
                continue
            if rep._busy_since is None:
                rep._busy_since = now
            call.record.start_s = now
            call.granted.set_result(rep)
        if s.state == "draining" and s.ongoing == 0:
            self.finalize(rep)

    def done(self, rep: LiveReplica, call: Call) -> None:
        """The call no longer occupies a slot of ``rep`` (answered, failed or abandoned)."""
        now = self.clock()
        s = rep.state
        s.finish(call.r, now)
        if s.running == 0:
            self._idle(rep, now)
        if s.state != "released":
            self.pump(rep)

    def in_gateway(self) -> int:
        """Calls of this model anywhere in the gateway: held, queued or in flight."""
        return len(self.unrouted) + self.pending + sum(rep.state.ongoing for rep in self.replicas)

    @staticmethod
    def _idle(rep: LiveReplica, now: float) -> None:
        if rep._busy_since is not None and rep.state.running == 0:
            rep.busy_s += now - rep._busy_since
            rep._busy_since = None
