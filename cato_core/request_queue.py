"""A replica's request queue: ordered by (priority, deadline, arrival), O(log n) per change.

FIFO policies (round robin, pow2) put every request at the same priority with an infinite
deadline, so the order falls back to arrival order.
"""

from __future__ import annotations

import heapq
from itertools import count

from cato_core.request import LLMRequest


class RequestQueue:
    def __init__(self, by_deadline: bool = True):
        self._heap: list[tuple[int, float, int, int, LLMRequest]] = []
        self.by_deadline = by_deadline
        self._pushes = count()  # last tie-break: requests themselves are never compared

    def push(self, r: LLMRequest) -> None:
        key = (r.priority, r.deadline_s, r.seq) if self.by_deadline else (0, 0.0, r.seq)
        heapq.heappush(self._heap, (*key, next(self._pushes), r))

    def peek(self) -> LLMRequest | None:
        return self._heap[0][-1] if self._heap else None

    def pop(self) -> LLMRequest:
        return heapq.heappop(self._heap)[-1]

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self):
        return (item[-1] for item in sorted(self._heap))
