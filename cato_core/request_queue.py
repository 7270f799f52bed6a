"""A replica's request queue: ordered by (priority, deadline, arrival), O(log n) per change.

FIFO policies (round robin, pow2) put every request at the same priority with an infinite
deadline, so the order falls back to arrival order.

The queue is the heap list itself: ``len(queue)`` and ``if queue`` are the list's own, with
no Python call in between, because the engine and the routers ask them for every request.
"""

from __future__ import annotations

import heapq
from itertools import count

from cato_core.request import LLMRequest


class RequestQueue(list):
    """A heap of (priority, deadline, seq, push count, request); read it through these methods."""

    def __init__(self, by_deadline: bool = True):
        super().__init__()
        self.by_deadline = by_deadline
        self._pushes = count()  # last tie-break: requests themselves are never compared

    def push(self, r: LLMRequest) -> None:
        key = (r.priority, r.deadline_s, r.seq) if self.by_deadline else (0, 0.0, r.seq)
        heapq.heappush(self, (*key, next(self._pushes), r))

    def peek(self) -> LLMRequest | None:
        return self[0][-1] if self else None

    def pop(self) -> LLMRequest:  # the heap's head, not the list's last item
        return heapq.heappop(self)[-1]

    def __iter__(self):
        """The requests in the order they will be taken."""
        return (item[-1] for item in sorted(list.__iter__(self)))

    __hash__ = object.__hash__  # a queue is an object, not a value
    __eq__ = object.__eq__
