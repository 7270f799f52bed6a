"""A vLLM-like continuous-batching engine, timed by a device profile.

Each engine step runs one token of every decoding sequence plus prefill chunks of newly
admitted prompts, up to ``max_num_batched_tokens`` (vLLM V1: running requests first, then
waiting ones). A request is admitted from its replica's queue when a slot is free
(``max_num_seqs``) and the KV cache can hold its prompt and output; reserving the whole
output up front keeps the model free of preemption (vLLM would preempt and recompute
instead, which our loads rarely reach).

Speed: while only decodes run, the engine advances in one event to the step at which the
next sequence finishes (closed-form time, see DeviceProfile.decode_run_s), so events per
request do not grow with output length. A request queued mid-run cuts that stretch at the
next step boundary, as vLLM admits new requests between steps. Per-sequence progress is
kept against a global step counter, so a stretch costs O(log n), not O(n).

A request admitted into a running batch costs the engine the profile's frontend_cpu_s (the
API server's work on the engine's core, cato_core/profile.py), paid before the step it joins:
the running batch pauses and the request's first step comes after it. Paid at admission, not
when the request is queued, because that is when the server sees it: CATO's gateway sends a
replica a call only when it has a free slot (cato_live/gateway/live_pool.py, pump), and the
engine admits it at the next step boundary. A request admitted into an idle engine overlaps
nothing: its front end is inside request_latency_s. (A stack that lets vLLM queue more than
max_num_seqs pays each front end on arrival, earlier in a burst; the simulator does not
model that.)
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Protocol

import simpy

from cato_core.profile import DeviceProfile
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest


class EngineListener(Protocol):
    def on_start(self, r: LLMRequest, now: float) -> None: ...
    def on_first_token(self, r: LLMRequest, now: float) -> None: ...
    def on_finish(self, r: LLMRequest, now: float) -> None: ...
    def on_fail(self, r: LLMRequest, now: float, why: str) -> None: ...


class _Seq:
    __slots__ = ("req", "prompt", "done", "output")

    def __init__(self, req: LLMRequest):
        self.req, self.prompt, self.done, self.output = req, req.prompt_tokens, 0, req.output_tokens


class Engine:
    def __init__(
        self,
        env: simpy.Environment,
        state: ReplicaState,
        profile: DeviceProfile,
        listener: EngineListener,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        chunked_prefill: bool,
        kv_capacity_tokens: int,
    ):
        self.env, self.state, self.profile, self.listener = env, state, profile, listener
        self._client_latency = profile.client_latency_s  # read for every first token and end
        self.max_num_seqs = max_num_seqs
        self.max_batched = max_num_batched_tokens
        self.chunked = chunked_prefill
        self.kv_capacity = kv_capacity_tokens
        self.kv_used = 0
        self._prefilling: deque[_Seq] = deque()
        self._decoding: list[tuple[int, int, _Seq]] = []  # heap of (finish step, order, seq)
        self._order = 0
        self._seqs = 0  # len(_prefilling) + len(_decoding), kept as a count for the hot path
        self._steps = 0  # decode steps run so far: a sequence's progress is measured against it
        self._context = 0  # tokens held by decoding sequences (prompt + generated)
        self._pending: simpy.Timeout | None = None  # the scheduled step end; any other is void
        self._then: tuple = ()  # (callback, args) to run when _pending fires
        self._on_timeout = self._fire  # bound once: every step appends it
        self._in_step = False
        self._frontend_cpu = profile.frontend_cpu_s  # read for every admission
        self._frontend_debt = 0.0  # API-server CPU owed by requests admitted into a running batch
        self._stretch: tuple[float, int, int, int] | None = None  # (start, seqs, context, steps)
        self._busy_since: float | None = None
        self.busy_s = 0.0
        self.steps_run = 0  # events, for the benchmark

    # -- driver API --------------------------------------------------------------------
    def notify(self) -> None:
        """A request was queued on this replica: start stepping, or cut a decode stretch."""
        if not self._in_step:
            # Start at the end of this instant, so requests arriving together share a step.
            self._in_step = True
            self._schedule(0.0, self._next_step)
            return
        if self._stretch is not None and self._can_admit():
            self._cut_stretch()

    def abort(self, now: float, why: str) -> None:
        """Stop now, as a killed server does: every request in the batch fails with ``why``."""
        self._pending = None  # voids the scheduled end of the step or stretch under way
        seqs = [*self._prefilling, *(s for _, _, s in self._decoding)]
        self._prefilling.clear()
        self._decoding.clear()
        self._stretch, self._context, self._in_step, self._frontend_debt = None, 0, False, 0.0
        if self._busy_since is not None:
            self.busy_s += now - self._busy_since
            self._busy_since = None
        for s in seqs:
            self.kv_used -= s.prompt + s.output
            self._seqs -= 1
            self.state.finish(s.req, now)
            self.listener.on_fail(s.req, now, why)

    @property
    def seqs(self) -> int:
        """Sequences in the batch (prefilling or decoding)."""
        return self._seqs

    def busy_until_now(self, now: float) -> float:
        return self.busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)

    # -- internals ---------------------------------------------------------------------
    def _can_admit(self) -> bool:
        head = self.state.queue.peek()
        return (
            head is not None
            and self._seqs < self.max_num_seqs
            and self.kv_used + head.prompt_tokens + head.output_tokens <= self.kv_capacity
        )

    def _admit(self, now: float) -> None:
        queue = self.state.queue
        frontend = self._frontend_cpu
        while self._seqs < self.max_num_seqs:
            head = queue.peek()
            if head is None:
                break
            need = head.prompt_tokens + head.output_tokens
            if need > self.kv_capacity:  # can never run here: fail it rather than block forever
                r = self.state.take(now)
                self.state.finish(r, now)
                self.listener.on_fail(r, now, f"needs {need} KV tokens, replica holds {self.kv_capacity}")
                continue
            if self.kv_used + need > self.kv_capacity:
                break
            r = self.state.take(now)
            if self._seqs and frontend:  # joins a running batch: its front end is on the engine's core
                self._frontend_debt += frontend
            self.kv_used += need
            self._seqs += 1
            self._prefilling.append(_Seq(r))
            self.listener.on_start(r, now)

    def _schedule(self, delay: float, callback, *args) -> None:
        """Run ``callback(*args)`` after ``delay``, voiding what was scheduled before."""
        ev = self._pending = self.env.timeout(delay)
        self._then = callback, args
        ev.callbacks.append(self._on_timeout)

    def _fire(self, ev: simpy.Timeout) -> None:
        if ev is self._pending:
            callback, args = self._then
            callback(*args)

    def _next_step(self) -> None:
        self._admit(self.env.now)
        if self._frontend_debt:
            # The front ends of the requests just admitted, before the step they join. Admitted
            # first: each is in the engine's hands, as the gateway sees it, while its front end runs.
            # Then the step, not another admission: a request arriving meanwhile joins at the
            # step's end, so a burst's front ends do not hold up the batch one after another.
            debt, self._frontend_debt = self._frontend_debt, 0.0
            self._schedule(debt, self._step)
            return
        self._step()

    def _step(self) -> None:
        now = self.env.now
        if self._prefilling:
            self._mixed_step()
        elif self._decoding:
            steps = self._decoding[0][0] - self._steps
            n = len(self._decoding)
            self._stretch = (now, n, self._context, steps)
            self._begin_busy(now)
            self._schedule(self.profile.decode_run_s(n, self._context, steps), self._end_stretch, steps)
        else:
            self._in_step = False
            if self._busy_since is not None:
                self.busy_s += now - self._busy_since
                self._busy_since = None

    def _begin_busy(self, now: float) -> None:
        self._in_step = True
        self.steps_run += 1
        if self._busy_since is None:
            self._busy_since = now

    def _mixed_step(self) -> None:
        """One step: a token for every decoding sequence plus prefill chunks in the budget."""
        n_dec = len(self._decoding)
        budget = self.max_batched - n_dec
        chunks: list[tuple[_Seq, int]] = []
        tokens, attn, seqs = n_dec, 0.0, n_dec  # seqs: sequences that get a token (the profile's S)
        for s in self._prefilling:
            left = s.prompt - s.done
            if self.chunked:
                chunk = min(left, budget)
            else:  # whole prompts only; one alone may exceed the budget rather than starve
                chunk = left if (left <= budget or not chunks) else 0
            if chunk <= 0:
                break
            chunks.append((s, chunk))
            budget -= chunk
            tokens += chunk
            attn += chunk * (2 * s.done + chunk)
            if chunk == left:  # its last chunk: the prompt's first token comes out of this step
                seqs += 1
        self._stretch = None
        self._begin_busy(self.env.now)
        self._schedule(self.profile.step_s(tokens, attn, self._context, seqs), self._end_mixed, n_dec, chunks)

    def _end_mixed(self, n_dec: int, chunks: list[tuple[_Seq, int]]) -> None:
        now = self.env.now
        if n_dec:
            self._advance(1, n_dec, now)
        for s, chunk in chunks:
            s.done += chunk
            if s.done == s.prompt:
                self._prefilling.popleft()  # chunks go in queue order: finished ones lead
                self._tell(self.listener.on_first_token, s.req, now)
                if s.output <= 1:
                    self._release(s, now)
                else:  # holds prompt + its first token; output - 1 decode steps to go
                    self._order += 1
                    heapq.heappush(self._decoding, (self._steps + s.output - 1, self._order, s))
                    self._context += s.prompt + 1
        self._next_step()

    def _advance(self, steps: int, n: int, now: float) -> None:
        self._steps += steps
        self._context += n * steps
        while self._decoding and self._decoding[0][0] <= self._steps:
            s = heapq.heappop(self._decoding)[2]
            self._context -= s.prompt + s.output
            self._release(s, now)

    def _end_stretch(self, steps: int) -> None:
        _, n, _, _ = self._stretch
        self._stretch = None
        self._advance(steps, n, self.env.now)
        self._next_step()

    def _cut_stretch(self) -> None:
        """End the decode stretch at the next step boundary so new requests can join."""
        start, n, context, steps = self._stretch
        done = self.profile.decode_steps_within(n, context, self.env.now - start)
        cut = done + 1
        if cut >= steps:
            return
        self._stretch = (start, n, context, cut)
        end = start + self.profile.decode_run_s(n, context, cut)
        self._schedule(max(end - self.env.now, 0.0), self._end_stretch, cut)

    def _release(self, s: _Seq, now: float) -> None:
        self.kv_used -= s.prompt + s.output
        self._seqs -= 1
        self.state.finish(s.req, now)
        self._tell(self.listener.on_finish, s.req, now)

    def _tell(self, event, r: LLMRequest, now: float) -> None:
        """Report a first token or an end: the client sees it the profile's client latency later."""
        latency = self._client_latency
        if latency:
            self.env.timeout(latency).callbacks.append(lambda _e: event(r, self.env.now))
        else:
            event(r, now)
