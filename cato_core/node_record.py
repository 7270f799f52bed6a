"""What happened to one node of a task: the one record type behind every nodes.parquet row.

The simulator, the replayer and the gateway fill the same fields. The model pool
(cato_core.pool) writes the routing facts (replica, priority, slack, predicted wait, queued,
start); the driver writes what its engine or its client saw (first token, end, tokens); the
task run (cato_core.task_run) writes the status when the node or its task ends. Times are
seconds on the driver's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

NODE_STATUSES = ("running", "ok", "failed", "timeout", "cancelled", "rejected")


@dataclass(slots=True)
class NodeRecord:
    task_id: str
    node: str
    kind: str  # llm | tool
    model: str | None  # llm: the model serving it
    deadline_s: float | None  # D_i from the Profiler's slack allotment
    queued_s: float | None = None  # llm: routed into a replica's queue; tool: started
    replica: str | None = None
    priority: int | None = None
    slack_s: float | None = None  # deadline - time at routing
    predicted_wait_s: float | None = None  # W_k of the chosen replica at routing
    start_s: float | None = None  # taken by the engine (sent to the replica, live)
    first_token_s: float | None = None
    end_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    status: str = "running"  # one of NODE_STATUSES
    error: str | None = None

    @property
    def wait_s(self) -> float | None:
        """Routed to taken by the engine: the wait W_k predicted."""
        if self.start_s is None or self.queued_s is None:
            return None
        return self.start_s - self.queued_s

    def row(self) -> tuple:
        """The nodes.parquet row (cato_core.results.NODES order)."""
        start, queued = self.start_s, self.queued_s
        wait = start - queued if start is not None and queued is not None else None
        return _ROUTING(self) + (wait,) + _TIMES(self)


# The row's columns before and after wait_s (attrgetter builds each part in C: the simulator
# writes a row for every node it runs).
_ROUTING = attrgetter("task_id", "node", "kind", "model", "replica", "priority", "slack_s", "predicted_wait_s")
_TIMES = attrgetter(
    "deadline_s", "queued_s", "start_s", "first_token_s", "end_s", "prompt_tokens", "output_tokens", "status"
)
