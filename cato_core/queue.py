"""A replica's request queue: ordered by (priority, deadline, arrival), O(log n) per change.

FIFO policies (round robin, pow2) put every request at the same priority with an infinite
deadline, so the order falls back to arrival order.
"""

from __future__ import annotations

import heapq

from cato_core.request import LLMRequest


class RequestQueue:
    def __init__(self, by_deadline: bool = True):
        self._heap: list[tuple[int, float, int, LLMRequest]] = []
        self.by_deadline = by_deadline

    def push(self, r: LLMRequest) -> None:
        key = (r.priority, r.deadline_s, r.seq) if self.by_deadline else (0, 0.0, r.seq)
        heapq.heappush(self._heap, (*key, r))

    def peek(self) -> LLMRequest | None:
        return self._heap[0][3] if self._heap else None

    def pop(self) -> LLMRequest:
        return heapq.heappop(self._heap)[3]

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self):
        return (item[3] for item in sorted(self._heap))
