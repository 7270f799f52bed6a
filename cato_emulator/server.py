"""A vLLM-compatible OpenAI server whose responses are timed by the simulator's engine model.

    python -m cato_emulator --profile codellama-7b_a100 --port 8001 [--host 127.0.0.1]
        [--served-model-name NAME] [--max-num-seqs N] [--max-num-batched-tokens N]
        [--time-scale X] [--kv-capacity-tokens N] [--max-model-len N] [--no-chunked-prefill]

(``python -m cato_emulator.server`` is the same.) For machines with no accelerator: a
replica that behaves like vLLM in time. This module is the HTTP side only; the replica (the
simulator's engine on a real-time SimPy environment) is cato_emulator/replica.py, and its
clock, with the timing model, cato_emulator/realtime.py.
``--time-scale X`` multiplies every emulated duration by X (0.5 = twice as fast as the
profile says).

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
from typing import Annotated

import typer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from cato_core.errors import InputError
from cato_emulator.replica import EmulatedReplica, EmulatorConfig, Pending

TOKEN_TEXT = " tok"
CHARS_PER_TOKEN = 4
DEFAULT_MAX_TOKENS = 16  # vLLM's default for /v1/completions


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
    raise BadRequest(
        "prompt must be a non-empty list of token IDs or a string (one prompt per request)", param="prompt"
    )


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
            app.state.replica.close()

    app = FastAPI(title="CATO vLLM emulator", lifespan=lifespan)

    @app.exception_handler(BadRequest)
    async def _bad(_request, exc: BadRequest):
        return JSONResponse(error_body(exc.message, exc.code, exc.param), status_code=exc.code)

    @app.get("/health")
    async def health():
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {
                    "id": cfg.served_model_name,
                    "object": "model",
                    "created": app.state.started,
                    "owned_by": "cato-emulator",
                    "root": cfg.profile.model,
                    "max_model_len": cfg.max_model_len or app.state.replica.kv_capacity,
                }
            ],
        }

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(
            render_metrics(app.state.replica), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

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
        priority = _int_field(body, "priority", 0, -(2**31))
        why = replica.limit_error(prompt_tokens, max_tokens)
        if why:
            raise BadRequest(why, param="max_tokens")
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        pending = replica.submit(prompt_tokens, max_tokens, priority, request.headers.get("x-cato-task-id", ""))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + max_tokens,
            "completion_tokens": max_tokens,
        }
        if not stream:
            try:
                await pending.finished
            except RuntimeError as e:
                raise BadRequest(str(e)) from None
            text = TOKEN_TEXT * max_tokens
            choice = (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "length",
                    "stop_reason": None,
                }
                if chat
                else {"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None}
            )
            return {
                "id": rid,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": cfg.served_model_name,
                "choices": [choice],
                "usage": usage,
            }
        return StreamingResponse(
            _stream(pending, rid, created, chat, max_tokens, include_usage, usage), media_type="text/event-stream"
        )

    async def _stream(pending: Pending, rid, created, chat, max_tokens, include_usage, usage):
        obj = "chat.completion.chunk" if chat else "text_completion"

        def event(choices, u=None) -> str:
            return (
                "data: "
                + json.dumps(
                    {
                        "id": rid,
                        "object": obj,
                        "created": created,
                        "model": cfg.served_model_name,
                        "choices": choices,
                        **({"usage": u} if include_usage else {}),
                    }
                )
                + "\n\n"
            )

        def choice(text: str, finish: str | None) -> dict:
            if chat:
                return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}

        try:
            if chat:  # vLLM sends the role first, before any token
                yield event(
                    [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
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
    served_model_name: Annotated[
        str | None, typer.Option(help="model name clients use (default: the profile's name)")
    ] = None,
    max_num_seqs: Annotated[int, typer.Option(help="sequences in a batch at most (vLLM's default)")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option(help="tokens in one engine step at most")] = 2048,
    chunked_prefill: Annotated[bool, typer.Option(help="split long prompts over steps (vLLM V1's default)")] = True,
    kv_capacity_tokens: Annotated[int | None, typer.Option(help="KV-cache tokens (default: the profile's)")] = None,
    max_model_len: Annotated[int | None, typer.Option(help="prompt + max_tokens at most (default: no limit)")] = None,
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
            (
                "--kv-capacity-tokens",
                kv_capacity_tokens,
                kv_capacity_tokens is None or kv_capacity_tokens >= 1,
                "an integer >= 1",
            ),
            ("--max-model-len", max_model_len, max_model_len is None or max_model_len >= 2, "an integer >= 2"),
            ("--time-scale", time_scale, time_scale > 0, "a number > 0"),
        ):
            if not ok:
                raise InputError(opt, str(value), expect)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    cfg = EmulatorConfig(
        prof,
        served_model_name or prof.name,
        max_num_seqs,
        max_num_batched_tokens,
        chunked_prefill,
        kv_capacity_tokens,
        max_model_len,
        time_scale,
    )
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)


def main(argv: list[str] | None = None) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(serve)
    app(argv)


if __name__ == "__main__":
    main()
