"""One record per LLM or tool node the gateway ran: the core's NodeRecord plus what was sent.

Times are seconds since the gateway started. ``attempts`` lists the replicas tried in
order; ``replica`` and ``priority`` are those of the last attempt; ``sent_priority`` is
the ``priority`` field put in the body (None when the backend has no priority scheduling).
``first_token_s`` is the first response bytes (the whole answer if not streamed); status
``rejected``: the replica answered 4xx.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cato_core.node_record import NodeRecord

# GET /v1/cato/nodes: a record's keys, in this order.
JSON_KEYS = (
    "task_id",
    "task_type",
    "node",
    "kind",
    "model",
    "deadline_s",
    "sla_s",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "stream",
    "replica",
    "priority",
    "sent_priority",
    "slack_s",
    "predicted_wait_s",
    "queued_s",
    "start_s",
    "first_token_s",
    "end_s",
    "status",
    "error",
    "attempts",
    "wait_s",
)


@dataclass(slots=True, kw_only=True)
class CallRecord(NodeRecord):
    task_type: str
    sla_s: float | None
    arrival_s: float  # received (llm) or started (tool)
    stream: bool = False
    sent_priority: int | None = None
    attempts: list[str] = field(default_factory=list)

    def missed(self, ttft_only: bool) -> bool:
        """The node's deadline passed before its first token (TTFT-critical) or its end."""
        t = self.first_token_s if ttft_only else self.end_s
        return self.deadline_s is not None and t is not None and t > self.deadline_s

    def row(self) -> dict:  # type: ignore[override]
        """The record as JSON (GET /v1/cato/nodes, /v1/tasks); NodeRecord.row(rec): its nodes.parquet row."""
        d = {k: getattr(self, k) for k in JSON_KEYS}
        d["attempts"] = list(self.attempts)
        return d
