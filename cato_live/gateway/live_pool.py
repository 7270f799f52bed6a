"""One model in the gateway: the core's model pool driven on the event loop, and each
replica's slots granted to the calls waiting for them.

The core pool (cato_core.pool) routes a call into one replica's priority queue or holds it
(no replica ready, or the router's Retry). The gateway then plays the engine's part: each
replica's dispatcher (:meth:`LivePool.pump`) hands the head of its queue to the waiting
call whenever the replica has fewer than ``max_num_seqs`` calls in flight; the call talks
to the replica itself and reports back with :meth:`LivePool.done`. Everything runs on the
event loop without awaiting, so no lock is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cato_core.pool import ModelPool
from cato_core.profile import DeviceProfile
from cato_core.replica import REPLICA_FIELDS, ReplicaState
from cato_core.request import LLMRequest
from cato_core.routers import Router
from cato_core.scalers import Scaler
from cato_live.gateway.api_error import ApiError
from cato_live.gateway.call_record import CallRecord

if TYPE_CHECKING:
    import aiohttp

    from cato_live.provisioners.base import ReplicaHandle


class Call:
    """One LLM call in the gateway: the core's request, the body to send, and its waiter."""

    __slots__ = ("r", "body", "path", "stream", "record", "give_up_s", "granted", "last_error")

    def __init__(
        self, r: LLMRequest, body: dict[str, Any], path: str, stream: bool, record: CallRecord, give_up_s: float
    ):
        self.r, self.body, self.path, self.stream = r, body, path, stream
        self.record, self.give_up_s = record, give_up_s
        self.granted: asyncio.Future[LiveReplica] = asyncio.get_running_loop().create_future()
        self.last_error: str | None = None

    def new_attempt(self, failed_on: str, error: str) -> None:
        """Route again, avoiding the replica that failed it."""
        self.r.avoid = self.r.avoid | {failed_on}
        self.last_error = error
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
        self.busy_s = 0.0  # time with at least one call in flight
        self._busy_since: float | None = None
        self.failed: str | None = None  # why it was taken out of routing

    @property
    def id(self) -> str:
        return self.state.id

    def busy(self, now: float) -> None:
        if self._busy_since is None:
            self._busy_since = now

    def idle(self, now: float) -> None:
        if self._busy_since is not None and self.state.running == 0:
            self.busy_s += now - self._busy_since
            self._busy_since = None

    def row(self, now: float) -> dict:
        """Its replicas.parquet row (released_s None while it runs) and what the gateway adds."""
        busy = self.busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)
        h, s = self.handle, self.state
        return {
            **dict(zip(REPLICA_FIELDS, s.row(h.machine if h else 0, busy, None), strict=True)),
            "state": "failed" if self.failed else s.state,
            "url": h.base_url if h else None,
            "error": self.failed,
            "meta": dict(h.meta) if h else {},
        }


class LivePool:
    """The replicas of one model, the calls held back from them, and their slots."""

    def __init__(
        self,
        model: str,
        profile: DeviceProfile,
        max_num_seqs: int,
        router: Router,
        scaler: Scaler,
        clock: Callable[[], float],
        metrics=None,
        on_released: Callable[[LiveReplica], None] | None = None,
    ):
        self.model, self.max_num_seqs, self.clock, self.metrics = model, max_num_seqs, clock, metrics
        self._on_released = on_released or (lambda rep: None)
        self.core = ModelPool(
            model,
            profile,
            max_num_seqs,
            router,
            scaler,
            call_later=self._call_later,
            dispatch=self._dispatch,
            reject=self._reject,
            on_released=self._released,
            stop=self._force_stop,
        )
        self.live: dict[str, LiveReplica] = {}  # every replica ever asked for, by id

    @property
    def scaler(self) -> Scaler:
        return self.core.scaler

    @property
    def replicas(self) -> list[LiveReplica]:
        """Not released: starting, ready or draining."""
        return [self.live[k.id] for k in self.core.replicas]

    @property
    def history(self) -> list[LiveReplica]:
        return [self.live[k.id] for k in self.core.history]

    @property
    def ready(self) -> list[ReplicaState]:
        return self.core.ready

    def starting(self) -> int:
        return self.core.starting

    # -- what the core pool asks of the event loop ---------------------------------------
    def _call_later(self, delay_s: float, fn: Callable[[float], None]) -> None:
        asyncio.get_running_loop().call_later(delay_s, lambda: fn(self.clock()))

    def _dispatch(self, k: ReplicaState, r: LLMRequest) -> None:
        if self.metrics:
            self.metrics.routed(self.model, r.priority)
        self.pump(self.live[k.id])

    def _reject(self, r: LLMRequest) -> None:
        call: Call = r.ref
        if r.avoid:
            call.reject(
                ApiError(502, f"{call.last_error}; no other replica of {self.model!r} to retry on", "upstream_error")
            )
        else:
            call.reject(ApiError(503, f"no replica of model {self.model!r} is ready or starting", "unavailable_error"))

    def _force_stop(self, k: ReplicaState, now: float) -> None:
        """Still draining after the scaler's drain_timeout_s (Ray's graceful shutdown timeout):
        the calls still queued on it fail; those in flight fail as the replica stops."""
        queue = k.queue
        for r in [queue.pop() for _ in range(len(queue))]:
            call: Call = r.ref
            call.reject(ApiError(503, f"replica {k.id} was force-stopped while draining", "unavailable_error"))

    def _released(self, k: ReplicaState) -> None:
        rep = self.live[k.id]
        rep.idle(k.released_s)
        self._on_released(rep)

    # -- replicas ------------------------------------------------------------------------
    def new_replica(self, replica_id: str) -> LiveReplica:
        rep = LiveReplica(self.core.new_replica(replica_id, self.clock()))
        self.live[replica_id] = rep
        return rep

    def mark_ready(self, rep: LiveReplica, handle: ReplicaHandle, client: aiohttp.ClientSession) -> None:
        rep.handle, rep.client = handle, client
        self.core.mark_ready(rep.state, self.clock())

    def release(self, rep: LiveReplica) -> None:
        """Stop routing to it; it is stopped once its queue and calls in flight are done."""
        self.core.release(rep.state, self.clock())

    def fail(self, rep: LiveReplica, reason: str) -> None:
        """Take a dead replica out of routing now; calls queued on it are routed again."""
        if rep.state.state == "released":
            return
        rep.failed = reason
        if self.metrics:
            self.metrics.replica_failed(self.model)
        self.core.fail(rep.state, self.clock())

    # -- calls ---------------------------------------------------------------------------
    def submit(self, call: Call) -> None:
        """Route a call (again, after a failed attempt) or hold it."""
        self.core.submit(call.r, self.clock())

    def pump(self, rep: LiveReplica) -> None:
        """The replica's dispatcher: hand queue heads to their calls while it has free slots."""
        s = rep.state
        if s.state not in ("ready", "draining"):
            return
        now = self.clock()
        while s.queue and s.running < self.max_num_seqs:
            r = s.take(now)
            call: Call = r.ref
            if r.cancelled or call.granted.done():
                s.finish(r, now)
                continue
            rep.busy(now)
            self.core.started(r, now)
            call.granted.set_result(rep)
        self.core.call_ended(s, now)

    def done(self, rep: LiveReplica, call: Call) -> None:
        """The call no longer occupies a slot of ``rep`` (answered, failed or abandoned)."""
        now = self.clock()
        s = rep.state
        s.finish(call.r, now)
        rep.idle(now)
        if s.state != "released":
            self.pump(rep)
