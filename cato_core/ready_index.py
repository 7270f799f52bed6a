"""The pool's ready list, with an index of its quiet replicas kept up to date by the replicas.

``ReadyReplicas`` is the list ``ModelPool.ready`` (a plain list to everyone who reads it)
plus what lets the CATO router decide without scanning every replica
(cato_core.routers.cato, ``CatoRouter.route``):

- ``quiet``: the sorted positions of the *quiet* replicas: nothing queued, nothing running,
  and the running sums back at exactly zero (a quiet replica's W is 0.0 and its T is
  T(0 running, 0 context): the least (W, E) any replica can have);
- ``suspects()``: the few other replicas the router must evaluate exactly because the
  argument that they lose to a quiet replica does not cover them: nothing running but a
  queue (their T is also T(0, 0)), a queued-prefill sum that float drift made negative,
  or a running request with an empty prompt (running context may be 0).

Every other replica is running at least one request whose prompt has a token (so its T is
at least T(1 running, 1 context)) and has a queued-prefill sum >= 0 (so W >= 0).

The list is rebuilt, O(n), whenever it changes (a replica is released or fails: rare),
except for a replica added at the end (the pool keeps creation order, so a new replica
becomes ready there): it is indexed alone, so a run that starts 1,000 replicas does not
rebuild 1,000 times. Between rebuilds each ReplicaState tells its ``watcher`` (this list) what
changes the index: ``enqueuing`` (a request is queued: the replica may stop being quiet),
``engine_idle`` (its last running request finished: it may be quiet again) and
``suspect`` (its queued sum went negative). Each costs a bisect on a list of ints. The
suspects are pruned lazily when read: a replica that no longer qualifies is dropped, and
one that qualifies again is told about again by its own transition.

A replica can be indexed by one list only; a second ``ReadyReplicas`` over the same
replicas marks itself ``broken``, and a broken list (or one with replicas of different
profiles) is routed by the plain scan.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

from cato_core.profile import DeviceProfile
from cato_core.replica import ReplicaState


def _is_quiet(k: ReplicaState) -> bool:
    return not k.queue and k.running == 0 and k._queued_prefill_s == 0.0 and k._running_context == 0


def _monotone(p: DeviceProfile) -> bool:
    """Coefficients >= 0 make step times monotone; finite ones keep every estimate a number."""
    coefficients = (p.overhead_s, p.per_token_s, p.linear_floor_s, p.prefill_attn_s, p.decode_ctx_s)
    return all(0.0 <= c < math.inf for c in coefficients)


class ReadyReplicas(list):
    """The ready replicas of one model, in the pool's order, with the quiet index (module doc)."""

    def __init__(self, replicas: Iterable[ReplicaState] = ()):
        super().__init__(replicas)
        self.quiet: list[int] = []  # positions of the quiet replicas, sorted
        self.broken = False  # True: the index cannot vouch for this list; route by scan
        self._pos: dict[ReplicaState, int] = {}
        self._suspects: dict[ReplicaState, None] = {}  # evaluate exactly (pruned when read)
        self._empty_prompt: set[ReplicaState] = set()  # may run an empty prompt until quiet
        self._rebuild()

    def _rebuild(self) -> None:
        """Recompute the index from the replicas' states (after any change to the list)."""
        old = self._pos
        self._pos = {k: i for i, k in enumerate(self)}
        for k in old:
            if k not in self._pos and k.watcher is self:
                k.watcher = None
        self.quiet = []
        self._suspects = {k: None for k in self._suspects if k in self._pos}
        self._empty_prompt &= self._pos.keys()
        profile = self[0].profile if self else None
        self.broken = len(self._pos) != len(self) or (profile is not None and not _monotone(profile))
        for i, k in enumerate(self):
            if k.watcher is not self:
                if k.watcher is not None or (k.profile is not profile and k.profile != profile):
                    self.broken = True
                    continue
                k.watcher = self
                if not _is_quiet(k):
                    self._empty_prompt.add(k)  # its history is unknown: evaluate it until quiet
            if _is_quiet(k):
                self.quiet.append(i)
            elif k.running == 0 or k._queued_prefill_s < 0.0:
                self._suspects[k] = None

    def append(self, k: ReplicaState) -> None:
        """list.append, then index ``k`` (or rebuild the index)."""
        list.append(self, k)
        if not self._indexed_at_end(k):
            self._rebuild()

    def insert(self, i: int, k: ReplicaState) -> None:
        """list.insert, then index ``k`` if it went to the end (else rebuild the index)."""
        at_end = i >= len(self)
        list.insert(self, i, k)
        if not (at_end and self._indexed_at_end(k)):
            self._rebuild()

    def _indexed_at_end(self, k: ReplicaState) -> bool:
        """Index ``k``, just added at the end, as a rebuild would; False: only a rebuild can."""
        first = self[0].profile
        if len(self) == 1 or self.broken or k in self._pos or k.watcher is not None:
            return False  # the first replica decides the profile; the rest are the rebuild's cases
        if k.profile is not first and k.profile != first:
            return False
        i = len(self) - 1
        self._pos[k] = i
        k.watcher = self
        if _is_quiet(k):
            self.quiet.append(i)  # the largest position: the list stays sorted
        else:
            self._empty_prompt.add(k)  # its history is unknown: evaluate it until quiet
            if k.running == 0 or k._queued_prefill_s < 0.0:
                self._suspects[k] = None
        return True

    # -- what the replicas tell it ---------------------------------------------------------
    def enqueuing(self, k: ReplicaState, prompt_tokens: int) -> None:
        """``k`` queues a request; called before the push, when it is quiet or the prompt empty."""
        if not k.queue and k.running == 0:
            q, p = self.quiet, self._pos[k]
            i = bisect_left(q, p)
            if i < len(q) and q[i] == p:
                del q[i]
            self._suspects[k] = None  # a queue and nothing running, until the engine takes it
        if prompt_tokens < 1:
            self._empty_prompt.add(k)

    def engine_idle(self, k: ReplicaState) -> None:
        """``k``'s last running request finished: quiet again, or a queue with nothing running."""
        if _is_quiet(k):
            q, p = self.quiet, self._pos[k]
            i = bisect_left(q, p)
            if i == len(q) or q[i] != p:
                q.insert(i, p)
            self._suspects.pop(k, None)
            self._empty_prompt.discard(k)
        else:
            self._suspects[k] = None

    def suspect(self, k: ReplicaState) -> None:
        """``k``'s queued-prefill sum went below zero (float drift): evaluate it exactly."""
        self._suspects[k] = None

    # -- what the router reads -------------------------------------------------------------
    def position(self, k: ReplicaState) -> int:
        return self._pos[k]

    def suspects(self) -> list[ReplicaState]:
        """The replicas (not quiet) that the quiet-replica argument does not cover: nothing
        running, a negative queued sum, or possibly an empty prompt running. Usually none."""
        s = self._suspects
        for k in [k for k in s if k.running and k._queued_prefill_s >= 0.0]:
            del s[k]  # housekeeping: no longer a suspect (a new transition re-adds it)
        if not self._empty_prompt:
            return list(s)
        return list(s.keys() | self._empty_prompt)


def _rebuilding(name: str):
    base = getattr(list, name)

    def method(self, *args, **kwargs):
        out = base(self, *args, **kwargs)
        self._rebuild()
        return out

    method.__name__ = name
    method.__doc__ = f"list.{name}, then rebuild the index."
    return method


for _name in (
    "extend",
    "remove",
    "pop",
    "clear",
    "sort",
    "reverse",
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
):
    setattr(ReadyReplicas, _name, _rebuilding(_name))
