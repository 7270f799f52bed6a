"""The X-CATO-* headers: what a client tells the gateway about a call, and what it answers.

A request names its task type, task id, LLM node and the task's SLA, and gives its deadline
as milliseconds from the moment of sending (negative once passed), so the gateway need not
share the client's clock. Plain vLLM ignores them all. Header names are case-insensitive;
these are the spellings we send and document.
"""

from __future__ import annotations

# request
TASK = "X-CATO-Task"
TASK_ID = "X-CATO-Task-Id"
NODE = "X-CATO-Node"
SLA_MS = "X-CATO-SLA-Ms"
DEADLINE_MS = "X-CATO-Deadline-Ms"
# answer
REPLICA = "X-CATO-Replica"
PRIORITY = "X-CATO-Priority"


def deadline_ms(deadline_s: float, now_s: float) -> str:
    """The X-CATO-Deadline-Ms value: ms from now to the deadline, to the microsecond."""
    return f"{(deadline_s - now_s) * 1000.0:.3f}"


def request_headers(
    task_type: str, task_id: str, node: str, sla_s: float, deadline_s: float, now_s: float
) -> dict[str, str]:
    return {
        TASK: task_type,
        TASK_ID: task_id,
        NODE: node,
        SLA_MS: f"{sla_s * 1000.0:.3f}",
        DEADLINE_MS: deadline_ms(deadline_s, now_s),
    }
