"""The CATO gateway: an OpenAI-compatible front that routes calls to replicas with the core's
policies, passes the priority on to vLLM, and runs the scalers.

    POST /v1/completions, /v1/chat/completions   OpenAI-compatible; streamed answers pass
                                                 through chunk for chunk (usage included)
    POST /v1/tasks                               a whole task graph (cato_live.gateway.tasks_endpoint)
    GET  /v1/models                              the DEPLOY models
    GET  /v1/cato/replicas                       the replicas table, seconds since start
    GET  /v1/cato/nodes                          the latest call records (?task_id=...)
    GET  /metrics                                Prometheus
    GET  /health                                 no token needed

Answers to calls carry ``X-CATO-Replica``, ``X-CATO-Priority`` and ``X-CATO-Task-Id``.
Errors are ``{"error": {"message", "type", "code"}}`` with a 4xx/5xx status, or an SSE error
event once a stream has begun. With a DEPLOY ``token``, every endpoint but /health wants
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from cato_live import headers as H
from cato_live.deploy import Deploy
from cato_live.error_text import describe, excerpt
from cato_live.gateway.api_error import ApiError
from cato_live.gateway.call_spec import parse_call
from cato_live.gateway.forward import StreamBroken, Upstream, open_call
from cato_live.gateway.live_pool import Call
from cato_live.gateway.state import GatewayState
from cato_live.gateway.tasks_endpoint import parse_task, run_task
from cato_live.provisioners.base import Provisioner
from cato_live.provisioners.registry import make_provisioner

DONE_TAIL = 32  # bytes kept to see an OpenAI stream's closing "data: [DONE]"
PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


class Gateway(GatewayState):
    """The gateway as its endpoints see it: the state plus the HTTP plumbing of each call."""

    # -- request plumbing ----------------------------------------------------------------
    def check_auth(self, request: Request) -> None:
        if self._auth is None:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._auth):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)", "authentication_error")

    async def read_json(self, request: Request) -> Any:
        limit = self.deploy.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "Content-Length: not a number")
            if int(length) > limit:
                raise ApiError(413, f"the body is over the limit of {limit} bytes", "request_too_large")
            raw = await request.body()
        else:
            parts, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the body is over the limit of {limit} bytes", "request_too_large")
                parts.append(chunk)
            raw = b"".join(parts)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON ({str(e)[:120]})") from None

    # -- endpoints -----------------------------------------------------------------------
    async def llm_call(self, kind: str, request: Request) -> Response:
        self.check_auth(request)
        body = await self.read_json(request)
        now = self.fleet.now()
        spec = parse_call(kind, body, request.headers, self.deploy, self.plans, self.profiles, now)
        call = self.new_call(
            spec.model,
            spec.task_id,
            spec.plan.name,
            spec.node,
            spec.prompt_tokens,
            spec.output_tokens,
            spec.deadline_s,
            spec.sla_s,
            spec.body,
            PATHS[kind],
            spec.stream,
            now,
        )
        try:
            up = await open_call(self.fleet, self.fleet.pools[spec.model], call, self.deploy)
        except ApiError as e:
            self.end_call(call, None, "timeout" if e.status == 504 else "failed", e.message)
            raise
        except asyncio.CancelledError:
            self.end_call(call, None, "cancelled", "the client went away")
            raise
        except Exception as e:
            self.end_call(call, None, "failed", describe(e))
            raise
        headers = {H.REPLICA: up.replica.id, H.PRIORITY: str(call.r.priority), H.TASK_ID: call.record.task_id}
        media, status = up.content_type, up.status
        if up.rest is None:
            self.end_call(
                call,
                up.replica,
                "ok" if status < 400 else "rejected",
                None if status < 400 else excerpt(up.first.decode("utf-8", "replace")),
            )
            return Response(up.first, status, headers, media)
        return StreamingResponse(self._relay(call, up), status, headers, media)

    async def _relay(self, call: Call, up: Upstream):
        """Pass a stream through; a failure after the first chunk ends it with an error event."""
        status, error = "cancelled", "the client went away"
        tail = up.first[-DONE_TAIL:]  # the stream's last bytes relayed
        try:
            yield up.first
            async for chunk in up.rest:
                tail = (tail + chunk)[-DONE_TAIL:]
                yield chunk
            status, error = "ok", None
        except StreamBroken as e:
            status, error = ("timeout" if e.timeout else "failed"), e.reason
            yield (ApiError(504, error, "timeout_error") if e.timeout else ApiError(502, error, "upstream_error")).sse()
        finally:
            if status == "cancelled" and tail.rstrip().endswith(b"data: [DONE]"):
                # The client had the whole answer and hung up before the replica's end of stream.
                status, error = "ok", None
            self.end_call(call, up.replica, status, error)
            with anyio.CancelScope(shield=True):  # the client may be gone: close regardless
                await up.aclose()

    async def task(self, request: Request) -> Response:
        self.check_auth(request)
        body = parse_task(await self.read_json(request), self)
        status, payload = await run_task(self, body)
        return JSONResponse(payload, status)

    def health(self) -> Response:
        models = {m: {"ready": len(p.ready), "starting": p.starting()} for m, p in self.fleet.pools.items()}
        ok = self.fleet.started and not self.fleet.closed and all(v["ready"] for v in models.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "models": models}, 200 if ok else 503)


def _error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.payload(), exc.status, headers)
    if isinstance(exc, StarletteHTTPException):  # no such route or method
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(exc.status_code, str(exc.detail), kind).payload(), exc.status_code)
    return JSONResponse(ApiError(500, f"internal error ({type(exc).__name__})", "internal_error").payload(), 500)


def create_app(deploy: Deploy, provisioner: Provisioner | None = None, gateway: Gateway | None = None) -> FastAPI:
    """The gateway as an ASGI app. Its lifespan starts the replicas (unless ``gateway`` was
    started already, as the CLI does) and stops them on shutdown."""
    gw = gateway or Gateway(deploy, provisioner or make_provisioner(deploy))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not gw.fleet.started:
            await gw.start()
        try:
            yield
        finally:
            await gw.close()

    app = FastAPI(title="CATO gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gw
    app.add_exception_handler(ApiError, _error_response)
    app.add_exception_handler(StarletteHTTPException, _error_response)
    app.add_exception_handler(Exception, _error_response)

    # Plain Starlette routes: the request path skips FastAPI's dependency machinery.
    async def completions(request: Request) -> Response:
        return await gw.llm_call("completions", request)

    async def chat(request: Request) -> Response:
        return await gw.llm_call("chat", request)

    async def tasks(request: Request) -> Response:
        return await gw.task(request)

    async def models(request: Request) -> Response:
        gw.check_auth(request)
        return JSONResponse(
            {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "cato"} for m in deploy.models]}
        )

    async def replicas(request: Request) -> Response:
        gw.check_auth(request)
        return JSONResponse({"replicas": gw.fleet.rows()})

    async def nodes(request: Request) -> Response:
        gw.check_auth(request)
        task_id = request.query_params.get("task_id")
        rows = [r.row() for r in gw.records if task_id is None or r.task_id == task_id]
        return JSONResponse({"nodes": rows})

    async def metrics(request: Request) -> Response:
        gw.check_auth(request)
        body, content_type = gw.fleet.metrics.render()
        return Response(body, media_type=content_type)

    async def health(request: Request) -> Response:
        return gw.health()

    for path, endpoint, method in (
        ("/v1/completions", completions, "POST"),
        ("/v1/chat/completions", chat, "POST"),
        ("/v1/tasks", tasks, "POST"),
        ("/v1/models", models, "GET"),
        ("/v1/cato/replicas", replicas, "GET"),
        ("/v1/cato/nodes", nodes, "GET"),
        ("/metrics", metrics, "GET"),
        ("/health", health, "GET"),
    ):
        app.add_route(path, endpoint, methods=[method])
    return app
