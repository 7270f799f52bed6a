"""One emulated replica: the simulator's engine on a real-time environment, fed by HTTP calls.

Each request is queued on a cato_core ReplicaState and run by cato_sim.engine.Engine
(continuous batching, ``max_num_seqs``, ``max_num_batched_tokens``, chunked prefill, KV
capacity, step times from the device profile) on a :class:`~cato_emulator.realtime.
LoopClockEnvironment`: the engine's first-token and finish events, delivered once the wall
clock reaches them, resolve the futures the HTTP handler awaits. ``time_scale`` multiplies
every emulated duration (0.5 = twice as fast as the profile says).

The replica keeps one loop timer, at the environment's next event; a new request first
brings the environment up to the wall clock's now, is queued at that time, and re-arms the
timer (it may have made an event due sooner), so the engine wakes at once, with no polling.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cato_core.profile import DeviceProfile
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_emulator.realtime import LoopClockEnvironment
from cato_sim.engine import Engine


@dataclass(frozen=True)
class EmulatorConfig:
    profile: DeviceProfile
    served_model_name: str
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    chunked_prefill: bool = True
    kv_capacity_tokens: int | None = None  # None: the profile's
    max_model_len: int | None = None  # None: only the KV capacity limits a request
    time_scale: float = 1.0  # real seconds per simulated second


@dataclass
class Pending:
    """One request in the engine: futures the HTTP handler waits on."""

    request: LLMRequest
    first_token: asyncio.Future
    finished: asyncio.Future
    times: dict = field(default_factory=dict)


class EmulatedReplica:
    """A ReplicaState and an Engine on a real-time environment; the engine's EngineListener."""

    def __init__(self, cfg: EmulatorConfig, loop: asyncio.AbstractEventLoop):
        self.cfg = cfg
        self.loop = loop
        self.env = LoopClockEnvironment(loop, factor=cfg.time_scale)
        self.kv_capacity = cfg.kv_capacity_tokens or cfg.profile.kv_capacity_tokens
        self.state = ReplicaState(
            cfg.served_model_name, cfg.served_model_name, cfg.profile, cfg.max_num_seqs, by_deadline=True
        )
        self.state.mark_ready(0.0)
        self.engine = Engine(
            self.env,
            self.state,
            cfg.profile,
            self,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=cfg.max_num_batched_tokens,
            chunked_prefill=cfg.chunked_prefill,
            kv_capacity_tokens=self.kv_capacity,
        )
        self._timer: asyncio.TimerHandle | None = None
        self._seq = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    def limit_error(self, prompt_tokens: int, max_tokens: int) -> str | None:
        """Why a request can never run here (vLLM answers such requests with HTTP 400)."""
        need = prompt_tokens + max_tokens
        if self.cfg.max_model_len is not None and need > self.cfg.max_model_len:
            return (
                f"This model's maximum context length is {self.cfg.max_model_len} tokens. However, you "
                f"requested {need} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion)."
            )
        if need > self.kv_capacity:
            return f"The request needs {need} KV-cache tokens; this replica holds {self.kv_capacity}."
        return None

    def submit(self, prompt_tokens: int, max_tokens: int, priority: int, task_id: str = "") -> Pending:
        """Queue a request at the wall clock's now; its futures resolve at its engine events."""
        self.env.advance()
        self._seq += 1
        now = self.env.now
        r = LLMRequest(
            request_id=f"emu-{self._seq}",
            task_id=task_id,
            model=self.cfg.served_model_name,
            prompt_tokens=prompt_tokens,
            output_tokens=max_tokens,
            arrival_s=now,
            deadline_s=now,
            priority=priority,
            seq=self._seq,
        )
        pending = Pending(r, self.loop.create_future(), self.loop.create_future())
        pending.times["queued"] = now
        r.ref = pending
        self.state.enqueue(r)
        self.engine.notify()
        self._wake()
        return pending

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        """Run what is due, then set the one timer at the next event."""
        self.close()
        self.env.advance()
        when = self.env.next_due()
        if when is not None:
            self._timer = self.loop.call_at(when, self._wake)

    # -- EngineListener: called while the environment advances, in the loop's thread
    def on_start(self, r: LLMRequest, now: float) -> None:
        r.ref.times["start"] = now

    def on_first_token(self, r: LLMRequest, now: float) -> None:
        r.ref.times["first_token"] = now
        self.prompt_tokens_total += r.prompt_tokens
        self.generation_tokens_total += 1
        if not r.ref.first_token.done():
            r.ref.first_token.set_result(now)

    def on_finish(self, r: LLMRequest, now: float) -> None:
        r.ref.times["end"] = now
        self.generation_tokens_total += r.output_tokens - 1
        if not r.ref.finished.done():
            r.ref.finished.set_result(now)

    def on_fail(self, r: LLMRequest, now: float, why: str) -> None:
        for fut in (r.ref.first_token, r.ref.finished):
            if not fut.done():
                fut.set_exception(RuntimeError(why))

    # -- what /metrics shows
    @property
    def running(self) -> int:
        return self.engine.seqs

    @property
    def waiting(self) -> int:
        return self.state.queued

    @property
    def kv_usage(self) -> float:
        return self.engine.kv_used / self.kv_capacity
