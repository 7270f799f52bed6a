"""One record per LLM or tool node the gateway ran: the sim's nodes table plus what was sent.

Times are seconds since the gateway started. ``attempts`` lists the replicas tried in
order; ``replica`` and ``priority`` are those of the last attempt; ``sent_priority`` is
the ``priority`` field put in the body (None when the backend has no priority scheduling).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(slots=True)
class CallRecord:
    task_id: str
    task_type: str
    node: str
    kind: str  # llm | tool
    model: str | None
    deadline_s: float | None
    sla_s: float | None
    arrival_s: float  # received (llm) or started (tool)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    stream: bool = False
    replica: str | None = None
    priority: int | None = None
    sent_priority: int | None = None
    slack_s: float | None = None  # deadline - time at routing
    predicted_wait_s: float | None = None  # W_k of the chosen replica at routing
    queued_s: float | None = None  # routed into a replica's queue
    start_s: float | None = None  # taken from the queue and sent
    first_token_s: float | None = None  # first response bytes (the whole answer if not streamed)
    end_s: float | None = None
    status: str = "running"  # ok | failed | timeout | cancelled | rejected (4xx from the replica)
    error: str | None = None
    attempts: list[str] = field(default_factory=list)

    @property
    def wait_s(self) -> float | None:
        return self.start_s - self.queued_s if self.start_s is not None and self.queued_s is not None else None

    def missed(self, ttft_only: bool) -> bool:
        """The node's deadline passed before its first token (TTFT-critical) or its end."""
        t = self.first_token_s if ttft_only else self.end_s
        return self.deadline_s is not None and t is not None and t > self.deadline_s

    def row(self) -> dict:
        d = asdict(self)
        d["wait_s"] = self.wait_s
        return d
