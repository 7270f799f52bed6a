"""What the policies know of one replica: its queue, its load, and wait estimates from them.

Both drivers keep one ReplicaState per replica and tell it when a request is queued, taken
by the engine and finished; routers and scalers read it and never touch the engine itself.
Every estimate is kept as a running sum, so a routing decision costs O(1) per replica and
never scans the queue.

Lifecycle: starting -> ready -> draining -> released, through the methods below (the model
pool, cato_core.pool, calls them; no driver assigns ``state``). A replica counts as
provisioned from ``asked_s`` (cold start included) to ``released_s``.
"""

from __future__ import annotations

from typing import Any, Literal

from cato_core.profile import DeviceProfile
from cato_core.request import LLMRequest
from cato_core.request_queue import RequestQueue

State = Literal["starting", "ready", "draining", "released"]

# The fields of ReplicaState.row: cato_core.results.REPLICAS's names, in order (checked by
# the tests; the gateway does not import pyarrow for them).
REPLICA_FIELDS = ("replica_id", "model", "machine", "asked_s", "ready_s", "released_s", "busy_s", "requests")


class ReplicaState:
    def __init__(
        self,
        replica_id: str,
        model: str,
        profile: DeviceProfile,
        max_num_seqs: int,
        by_deadline: bool = True,
        asked_s: float = 0.0,
    ):
        self.id = replica_id
        self.model = model
        self.profile = profile
        self.max_num_seqs = max_num_seqs
        self.queue = RequestQueue(by_deadline)
        self.state: State = "starting"
        self.asked_s = asked_s
        self.ready_s: float | None = None
        self.released_s: float | None = None
        self.requests = 0  # requests routed to it
        self.running = 0
        self.idle_since: float | None = None  # set once ready and empty
        self.driver: Any = None  # the driver's own object for this replica (engine, HTTP client)
        # the ready list that indexes it (cato_core.ready_index.ReadyReplicas), told of the
        # changes its index follows: queued while quiet, engine idle, queued sum below zero
        self.watcher: Any = None
        self._queued_prefill_s = 0.0  # sum of isolated prefill times of queued requests
        self._running_finish_s = 0.0  # sum of expected (isolated) finish times of running ones
        self._running_context = 0  # prompt tokens held by running requests

    # -- lifecycle ---------------------------------------------------------------------
    def mark_ready(self, now: float) -> None:
        self.state = "ready"
        self.ready_s = now
        self.idle_since = now if self.ongoing == 0 else None

    def drain(self) -> None:
        """Take no new work; finish what is queued and running."""
        if self.state in ("starting", "ready"):
            self.state = "draining"

    def release(self, now: float) -> None:
        self.state = "released"
        self.released_s = now

    def row(self, machine: int, busy_s: float, end: float | None) -> tuple:
        """The replicas.parquet row (REPLICA_FIELDS): provisioned until released, else until
        ``end`` (the run's end; None live, while it still runs). ``machine`` and ``busy_s``
        (time with at least one sequence running) are the driver's."""
        released = self.released_s if self.released_s is not None else end
        return (self.id, self.model, machine, self.asked_s, self.ready_s, released, busy_s, self.requests)

    # -- what the driver reports -------------------------------------------------------

    def enqueue(self, r: LLMRequest) -> None:
        if self.watcher is not None and (r.prompt_tokens < 1 or not (self.queue or self.running)):
            self.watcher.enqueuing(self, r.prompt_tokens)
        r.prefill_est_s = self.profile.prefill_s(r.prompt_tokens)
        self._queued_prefill_s += r.prefill_est_s
        self.queue.push(r)
        self.idle_since = None

    def take(self, now: float) -> LLMRequest:
        """The engine takes the head of the queue into its batch."""
        r = self.queue.pop()
        self._queued_prefill_s -= r.prefill_est_s
        if not self.queue:
            self._queued_prefill_s = 0.0  # drop float drift
        elif self._queued_prefill_s < 0.0 and self.watcher is not None:
            self.watcher.suspect(self)  # drift took it below zero: W may be < 0
        self.running += 1
        self._running_context += r.prompt_tokens
        r.finish_est_s = now + r.prefill_est_s + self.profile.decode_s(r.prompt_tokens, r.output_tokens)
        self._running_finish_s += r.finish_est_s
        return r

    def finish(self, r: LLMRequest, now: float) -> None:
        self.running -= 1
        self._running_context -= r.prompt_tokens
        self._running_finish_s -= r.finish_est_s
        if self.running == 0:
            self._running_finish_s = 0.0
            if self.watcher is not None:
                self.watcher.engine_idle(self)
        if self.ongoing == 0 and self.state == "ready":
            self.idle_since = now

    # -- what the policies read --------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self.queue)

    @property
    def ongoing(self) -> int:
        """Requests assigned to the replica and not finished (Ray Serve's 'ongoing')."""
        return len(self.queue) + self.running

    def wait_s(self, now: float) -> float:
        """W_k: expected wait of a new request before its prefill starts.

        The prefills of the requests queued ahead run first; if every slot would be taken,
        it also waits for the mean expected remaining time of the running requests.
        """
        w = self._queued_prefill_s
        if self.running + len(self.queue) >= self.max_num_seqs and self.running:
            w += max(0.0, self._running_finish_s / self.running - now)
        return w

    def service_s(self, r: LLMRequest) -> float:
        """T_r,k: profiled time of the part of r its deadline covers, at this replica's batch.

        r's prefill shares its step with one token of every running sequence; its decode
        steps run in a batch one larger than now.
        """
        p, n, ctx = self.profile, self.running, self._running_context
        t = p.step_s(r.prompt_tokens + n, r.prompt_tokens * r.prompt_tokens, ctx, n + 1)
        if not r.ttft_only and r.output_tokens > 1:
            t += p.decode_run_s(n + 1, ctx + r.prompt_tokens, r.output_tokens - 1)
        return t
