"""One LLM node request as the routers and scalers see it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cato_core.node_record import NodeRecord


@dataclass(slots=True)
class LLMRequest:
    """An LLM call of a task node. Times are seconds on the driver's clock.

    ``deadline_s`` is the node deadline D_r from the Profiler. It covers the first token
    (``ttft_only``) when that is the task's metric, the whole call otherwise.
    """

    request_id: str
    task_id: str
    model: str
    prompt_tokens: int
    output_tokens: int
    arrival_s: float
    deadline_s: float
    ttft_only: bool = False
    priority: int = 2
    seq: int = 0  # arrival order, the queue's tie-break
    attempts: int = 0  # routing attempts that found no room (pow2's backoff)
    prefill_est_s: float = 0.0  # isolated prefill time on its replica, set on enqueue
    finish_est_s: float = 0.0  # expected finish time, set when the engine takes it
    avoid: frozenset[str] = frozenset()  # replicas that failed it: route elsewhere (live)
    cancelled: bool = False  # its caller gave up: skip it wherever it is held or queued
    record: NodeRecord | None = None  # where the pool writes its routing facts
    replica: Any = None  # the ReplicaState the pool routed it to
    ref: Any = None  # the driver's handle on the call (its task and node, an HTTP body)
