"""The seam between the gateway and whatever runs replicas (URLs, processes, Ray actors).

The gateway asks a provisioner for a replica of a model when it starts and whenever the
scaler says add; it tells it to stop one when the scaler says release, and closes it on
exit (also on Ctrl-C). ``start`` returns once the replica answers, so the time it took is
the replica's real cold start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class ReplicaHandle:
    """A running replica: an OpenAI-compatible server at ``base_url`` (no trailing /v1)."""

    replica_id: str
    model: str  # the model name clients use (DEPLOY.yaml's models key)
    served_model: str  # the name the backend server knows it by
    base_url: str
    machine: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # pid, actor name, device, log path


class Provisioner(Protocol):
    kind: str

    async def start(self, model: str, replica_id: str) -> ReplicaHandle:
        """Start a replica of ``model`` and return once it is ready; raise if it cannot."""
        ...

    async def stop(self, handle: ReplicaHandle) -> None:
        """Stop one replica (idempotent)."""
        ...

    async def close(self) -> None:
        """Stop everything this provisioner started (idempotent)."""
        ...

    def capacity(self, model: str) -> int | None:
        """How many more replicas of ``model`` could start (None: no known limit)."""
        ...
