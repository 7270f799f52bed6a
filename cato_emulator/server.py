"""A vLLM-compatible OpenAI server whose responses are timed by the simulator's engine model.

    python -m cato_emulator.server --profile codellama-7b_a100 --port 8001 [--host 127.0.0.1]
        [--served-model-name NAME] [--max-num-seqs N] [--max-num-batched-tokens N]
        [--time-scale X] [--kv-capacity-tokens N] [--max-model-len N] [--no-chunked-prefill]

For machines with no accelerator: a replica that behaves like vLLM in time. Each request is
queued on a cato_core ReplicaState and run by cato_sim.engine.Engine (continuous batching,
``max_num_seqs``, ``max_num_batched_tokens``, chunked prefill, KV capacity, step times from
the device profile); the engine's first-token and finish events release the response.
``--time-scale X`` multiplies every emulated duration by X (0.5 = twice as fast as the
profile says).

Real time. The engine runs on a plain ``simpy.Environment`` driven from the asyncio loop
(the asyncio equivalent of ``simpy.rt.RealtimeEnvironment(strict=False)``): a loop timer
fires at the wall-clock time of the next simulated event and the environment is run up to
the wall clock's now; a new request first brings the environment up to now, then is queued.
Being late never shifts the model's schedule (events keep their simulated times), it only
delays their delivery: by the loop's timer resolution (about 1 ms, epoll) plus whatever
else the loop is doing. Everything happens in the loop's thread, so simpy is never touched
from two threads and a new request wakes the engine at once (no polling).

What is served, in vLLM's formats:
- POST /v1/completions (``prompt`` as a token-ID list: its length; as text: an estimate of
  one token per 4 characters), POST /v1/chat/completions (the same estimate over the
  message contents); ``max_tokens`` (default 16) tokens are always generated, as with
  ``ignore_eos``; ``priority`` (lower first, default 0) orders the queue, then arrival, as
  vLLM's priority scheduling does (without its preemption of running requests).
- Streaming (``stream: true``): the first token is one chunk at the engine's first-token
  time; the remaining ``max_tokens - 1`` tokens arrive together in one chunk at the finish
  time (the engine advances a decode run in one event, so that is all it knows; clients
  time TTFT and E2E, which this keeps exact and cheap); with
  ``stream_options.include_usage`` a usage chunk follows; then ``data: [DONE]``. Token
  text is a dummy string (" tok" per token).
- GET /v1/models, /health, /metrics (Prometheus: vllm:num_requests_running,
  vllm:num_requests_waiting, vllm:kv_cache_usage_perc, vllm:prompt_tokens_total,
  vllm:generation_tokens_total).
Not modelled: aborts (a request whose client goes away still runs to its end), stop
strings and EOS, sampling parameters (accepted and ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Optional

import typer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from cato_core.errors import InputError
from cato_core.profile import DeviceProfile
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest

TOKEN_TEXT = " tok"
CHARS_PER_TOKEN = 4
DEFAULT_MAX_TOKENS = 16  # vLLM's default for /v1/completions


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
class _Pending:
    """One request in the engine: futures the HTTP handler waits on."""

    request: LLMRequest
    first_token: asyncio.Future
    finished: asyncio.Future
    times: dict = field(default_factory=dict)


class RealtimeDriver:
    """Runs a simpy Environment in step with the wall clock, from the asyncio loop."""

    def __init__(self, env, loop: asyncio.AbstractEventLoop, time_scale: float):
        self.env, self.loop, self.scale = env, loop, time_scale
        self.t0 = loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def sim_now(self) -> float:
        return (self.loop.time() - self.t0) / self.scale

    def sync(self) -> None:
        """Process every simulated event due by now and bring the clock to now."""
        now = self.sim_now()
        if now > self.env.now:
            self.env.run(until=now)

    def tick(self) -> None:
        """Sync, then arm a timer for the next simulated event."""
        self._timer = None
        self.sync()
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        nxt = self.env.peek()
        if nxt != math.inf:
            self._timer = self.loop.call_at(self.t0 + nxt * self.scale, self.tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class EmulatedReplica:
    """One replica: a ReplicaState and an Engine on a real-time environment (EngineListener)."""

    def __init__(self, cfg: EmulatorConfig, loop: asyncio.AbstractEventLoop):
        import simpy

        from cato_sim.engine import Engine

        self.cfg = cfg
        self.env = simpy.Environment()
        self.driver = RealtimeDriver(self.env, loop, cfg.time_scale)
        self.kv_capacity = cfg.kv_capacity_tokens or cfg.profile.kv_capacity_tokens
        self.state = ReplicaState(cfg.served_model_name, cfg.served_model_name, cfg.profile, cfg.max_num_seqs,
                                  by_deadline=True)
        self.state.mark_ready(0.0)
        self.engine = Engine(self.env, self.state, cfg.profile, self, max_num_seqs=cfg.max_num_seqs,
                             max_num_batched_tokens=cfg.max_num_batched_tokens,
                             chunked_prefill=cfg.chunked_prefill, kv_capacity_tokens=self.kv_capacity)
        self.loop = loop
        self._seq = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0

    def limit_error(self, prompt_tokens: int, max_tokens: int) -> str | None:
        """Why a request can never run here (vLLM answers such requests with HTTP 400)."""
        need = prompt_tokens + max_tokens
        if self.cfg.max_model_len is not None and need > self.cfg.max_model_len:
            return (f"This model's maximum context length is {self.cfg.max_model_len} tokens. However, you "
                    f"requested {need} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion).")
        if need > self.kv_capacity:
            return f"The request needs {need} KV-cache tokens; this replica holds {self.kv_capacity}."
        return None

    def submit(self, prompt_tokens: int, max_tokens: int, priority: int, task_id: str = "") -> _Pending:
        self.driver.sync()
        self._seq += 1
        now = self.env.now
        r = LLMRequest(request_id=f"emu-{self._seq}", task_id=task_id, model=self.cfg.served_model_name,
                       prompt_tokens=prompt_tokens, output_tokens=max_tokens, arrival_s=now,
                       deadline_s=now, priority=priority, seq=self._seq)
        pending = _Pending(r, self.loop.create_future(), self.loop.create_future())
        pending.times["queued"] = now
        r.ref = pending
        self.state.enqueue(r)
        self.engine.notify()
        self.driver.tick()
        return pending

    # -- EngineListener: called while the driver runs the environment, in the loop's thread
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


class BadRequest(Exception):
    def __init__(self, message: str, code: int = 400, param: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


def error_body(message: str, code: int, param: str | None = None) -> dict:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(code, "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def prompt_length(prompt) -> int:
    """Tokens of a /v1/completions prompt: a token-ID list, a string, or a list of one of them."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (list, str)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return estimate_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return len(prompt)
    raise BadRequest("prompt must be a non-empty list of token IDs or a string (one prompt per request)",
                     param="prompt")


def chat_length(messages) -> int:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", param="messages")
    chars = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        chars += len(content or "")
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


def _int_field(body: dict, name: str, default: int, low: int) -> int:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise BadRequest(f"{name} must be an integer >= {low}", param=name)
    return v


def create_app(cfg: EmulatorConfig):
    """The FastAPI app of one emulated replica (the engine starts with the app's lifespan)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.replica = EmulatedReplica(cfg, asyncio.get_running_loop())
        app.state.started = int(time.time())
        try:
            yield
        finally:
            app.state.replica.driver.close()

    app = FastAPI(title="CATO vLLM emulator", lifespan=lifespan)

    @app.exception_handler(BadRequest)
    async def _bad(_request, exc: BadRequest):
        return JSONResponse(error_body(exc.message, exc.code, exc.param), status_code=exc.code)

    @app.get("/health")
    async def health():
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": cfg.served_model_name, "object": "model", "created": app.state.started,
            "owned_by": "cato-emulator", "root": cfg.profile.model,
            "max_model_len": cfg.max_model_len or app.state.replica.kv_capacity,
        }]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(render_metrics(app.state.replica),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _parse(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise BadRequest("the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        name = body.get("model")
        if name is not None and name != cfg.served_model_name:
            raise BadRequest(f"The model `{name}` does not exist.", 404, "model")
        return body

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _parse(request)
        return await _serve(request, body, prompt_length(body.get("prompt")), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _parse(request)
        return await _serve(request, body, chat_length(body.get("messages")), chat=True)

    async def _serve(request: Request, body: dict, prompt_tokens: int, chat: bool):
        replica: EmulatedReplica = request.app.state.replica
        limits = dict(body)
        if chat and limits.get("max_tokens") is None:  # the chat API's newer name for it
            limits["max_tokens"] = limits.get("max_completion_tokens")
        max_tokens = _int_field(limits, "max_tokens", DEFAULT_MAX_TOKENS, 1)
        priority = _int_field(body, "priority", 0, -(2 ** 31))
        why = replica.limit_error(prompt_tokens, max_tokens)
        if why:
            raise BadRequest(why, param="max_tokens")
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        pending = replica.submit(prompt_tokens, max_tokens, priority, request.headers.get("x-cato-task-id", ""))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + max_tokens,
                 "completion_tokens": max_tokens}
        if not stream:
            try:
                await pending.finished
            except RuntimeError as e:
                raise BadRequest(str(e)) from None
            text = TOKEN_TEXT * max_tokens
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                       "finish_reason": "length", "stop_reason": None} if chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None})
            return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                    "model": cfg.served_model_name, "choices": [choice], "usage": usage}
        return StreamingResponse(_stream(pending, rid, created, chat, max_tokens, include_usage, usage),
                                 media_type="text/event-stream")

    async def _stream(pending: _Pending, rid, created, chat, max_tokens, include_usage, usage):
        obj = "chat.completion.chunk" if chat else "text_completion"

        def event(choices, u=None) -> str:
            return "data: " + json.dumps({"id": rid, "object": obj, "created": created,
                                          "model": cfg.served_model_name, "choices": choices,
                                          **({"usage": u} if include_usage else {})}) + "\n\n"

        def choice(text: str, finish: str | None) -> dict:
            if chat:
                return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}

        try:
            if chat:  # vLLM sends the role first, before any token
                yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None}])
            await pending.first_token
            yield event([choice(TOKEN_TEXT, "length" if max_tokens == 1 else None)])
            if max_tokens > 1:
                await pending.finished
                yield event([choice(TOKEN_TEXT * (max_tokens - 1), "length")])
            if include_usage:
                yield event([], usage)
        except RuntimeError as e:
            yield "data: " + json.dumps(error_body(str(e), 400)) + "\n\n"
        yield "data: [DONE]\n\n"

    return app


def render_metrics(replica: EmulatedReplica) -> str:
    """Prometheus text exposition of the vLLM gauges and counters the emulator keeps."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    name = replica.cfg.served_model_name

    class _Collector:
        def collect(self):
            for metric, doc, value in (
                ("vllm:num_requests_running", "Number of requests in model execution batches.", replica.running),
                ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", replica.waiting),
                ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", replica.kv_usage),
            ):
                g = GaugeMetricFamily(metric, doc, labels=["model_name"])
                g.add_metric([name], value)
                yield g
            for metric, doc, value in (
                ("vllm:prompt_tokens", "Number of prefill tokens processed.", replica.prompt_tokens_total),
                ("vllm:generation_tokens", "Number of generation tokens processed.", replica.generation_tokens_total),
            ):
                c = CounterMetricFamily(metric, doc, labels=["model_name"])
                c.add_metric([name], value)
                yield c

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry).decode()


def serve(
    profile: Annotated[str, typer.Option(help="device profile: a shipped name or a YAML path")],
    port: Annotated[int, typer.Option(help="TCP port to listen on")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    served_model_name: Annotated[Optional[str], typer.Option(help="model name clients use (default: the profile's name)")] = None,
    max_num_seqs: Annotated[int, typer.Option(help="sequences in a batch at most (vLLM's default)")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option(help="tokens in one engine step at most")] = 2048,
    chunked_prefill: Annotated[bool, typer.Option(help="split long prompts over steps (vLLM V1's default)")] = True,
    kv_capacity_tokens: Annotated[Optional[int], typer.Option(help="KV-cache tokens (default: the profile's)")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(help="prompt + max_tokens at most (default: no limit)")] = None,
    time_scale: Annotated[float, typer.Option(help="multiplies every emulated duration (0.5 = twice as fast)")] = 1.0,
) -> None:
    """Serve a vLLM-compatible API timed by the simulator's engine model, in real time."""
    import uvicorn

    from cato_core.profile import load_profile

    try:
        prof = load_profile(profile)
        for opt, value, ok, expect in (
            ("--port", port, 0 <= port <= 65535, "a TCP port 0-65535"),
            ("--max-num-seqs", max_num_seqs, max_num_seqs >= 1, "an integer >= 1"),
            ("--max-num-batched-tokens", max_num_batched_tokens, max_num_batched_tokens >= 1, "an integer >= 1"),
            ("--kv-capacity-tokens", kv_capacity_tokens, kv_capacity_tokens is None or kv_capacity_tokens >= 1,
             "an integer >= 1"),
            ("--max-model-len", max_model_len, max_model_len is None or max_model_len >= 2, "an integer >= 2"),
            ("--time-scale", time_scale, time_scale > 0, "a number > 0"),
        ):
            if not ok:
                raise InputError(opt, str(value), expect)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    cfg = EmulatorConfig(prof, served_model_name or prof.name, max_num_seqs, max_num_batched_tokens,
                         chunked_prefill, kv_capacity_tokens, max_model_len, time_scale)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)


def main(argv: list[str] | None = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve)
    app(argv)


if __name__ == "__main__":
    main()
