"""``POST /v1/tasks``: one whole task graph of a task type, run by the gateway.

Every node starts once the nodes it runs after are done (the core's TaskRun, walked by
cato_live.task_walk). An LLM node is a streamed
completion of the task's prompt and ``max_tokens`` (plus ``sampling``: any other
completion fields, e.g. ``ignore_eos``), routed like any call with its node deadline from
the Profiler's slack allotment. A tool node is a sleep of its configured duration (DEPLOY
``tools``, else the type's median): real retrieval and validation tools are out of scope.
The answer has every node's timings, the task's TTFT and E2E (from arrival), its SLA and
whether it met it; a failed node fails the task (HTTP 502/504 with the same record).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cato_core.task_plan import NodePlan
from cato_core.task_run import TASK_FIELDS, TaskRun
from cato_live.error_text import describe, excerpt
from cato_live.gateway.api_error import ApiError
from cato_live.gateway.call_record import CallRecord
from cato_live.gateway.forward import StreamBroken, open_call
from cato_live.task_walk import walk

if TYPE_CHECKING:
    from cato_live.gateway.state import GatewayState as Gateway


class TaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str
    prompt: str | None = None
    prompt_token_ids: list[int] | None = Field(default=None, min_length=1)
    max_tokens: int = Field(ge=1)
    sla_ms: float | None = Field(default=None, gt=0)
    model: str | None = None  # serves every LLM node (None: the task type's)
    task_id: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_prompt(self) -> TaskBody:
        if (self.prompt is None) == (self.prompt_token_ids is None):
            raise ValueError("give exactly one of 'prompt' or 'prompt_token_ids'")
        return self


RESERVED = {"model", "prompt", "max_tokens", "stream", "stream_options", "priority", "cato"}


def parse_task(raw: Any, gw: Gateway) -> TaskBody:
    try:
        body = TaskBody.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "body"
        raise ApiError(400, f"{field}: {err['msg'].removeprefix('Value error, ')}") from None
    if body.task not in gw.plans:
        raise ApiError(400, f"unknown task type {body.task!r}; expected one of {sorted(gw.plans)}")
    if body.model is not None and body.model not in gw.deploy.models:
        raise ApiError(
            404, f"model {body.model!r} is not served here; models: {sorted(gw.deploy.models)}", "not_found_error"
        )
    clash = sorted(RESERVED & set(body.sampling))
    if clash:
        raise ApiError(400, f"sampling: {clash} are set by the gateway")
    return body


async def run_task(gw: Gateway, body: TaskBody) -> tuple[int, dict]:
    """Run the graph; (HTTP status, task record)."""
    plan = gw.plans[body.task]
    arrival = gw.fleet.now()
    task_id = body.task_id or f"task-{gw.next_seq()}"
    if body.prompt_token_ids is not None:
        prompt_tokens, prompt = len(body.prompt_token_ids), body.prompt_token_ids
    else:
        prompt_tokens = max(1, math.ceil(len(body.prompt) / gw.deploy.chars_per_token))
        prompt = body.prompt
    model_of = {n.index: body.model or n.model for n in plan.nodes if n.kind == "llm"}
    profiles = {n.model: gw.profiles[model_of[n.index]] for n in plan.nodes if n.kind == "llm"}
    run = TaskRun.from_profiles(
        task_id,
        plan,
        arrival,
        prompt_tokens,
        body.max_tokens,
        profiles,
        body.sla_ms / 1000.0 if body.sla_ms is not None else None,
    )
    texts: dict[int, dict] = {}

    async def run_node(n: NodePlan) -> float:
        if n.kind == "llm":
            texts[n.index] = await _llm_node(gw, run, n, model_of[n.index], prompt, body)
            return run.records[n.index].end_s
        now = gw.fleet.now()
        rec = CallRecord(
            task_id,
            n.name,
            "tool",
            None,
            run.deadlines[n.index],
            queued_s=now,
            start_s=now,
            task_type=plan.name,
            sla_s=run.sla_s,
            arrival_s=now,
        )
        gw.records.append(run.start_node(n, now, rec))
        await asyncio.sleep(n.tool_s)
        return gw.fleet.now()

    error: ApiError | None = None
    try:
        row = run.end(await walk(run, run_node), "ok", None)
    except ApiError as e:
        error = e
        row = run.end(gw.fleet.now(), "timeout" if e.status == 504 else "failed", e.message)
    except asyncio.CancelledError:
        run.end(gw.fleet.now(), "cancelled", "the client went away")
        raise
    except Exception as e:
        run.end(gw.fleet.now(), "failed", f"gateway error: {describe(e)}")
        raise
    out = {
        **dict(zip(TASK_FIELDS, row, strict=True)),
        "text": texts.get(plan.streamed, {}).get("text"),
        "usage": texts.get(plan.streamed, {}).get("usage"),
        "nodes": [r.row() for r in run.records if r is not None],
    }
    return (200, out) if error is None else (error.status, {**error.payload(), "task": out})


async def _llm_node(gw: Gateway, run: TaskRun, n: NodePlan, model: str, prompt, body: TaskBody) -> dict:
    """Node ``n`` as one streamed call: its text and usage; ApiError if it fails."""
    payload = {
        **body.sampling,
        "model": gw.deploy.served_name(model),
        "prompt": prompt,
        "max_tokens": body.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    call = gw.new_call(
        model,
        run.task_id,
        run.plan.name,
        n,
        run.prompt_tokens,
        body.max_tokens,
        run.deadlines[n.index],
        run.sla_s,
        payload,
        "/v1/completions",
        stream=True,
    )
    run.start_node(n, call.record.arrival_s, call.record)
    pool = gw.fleet.pools[model]
    try:
        up = await open_call(gw.fleet, pool, call, gw.deploy)
    except ApiError as e:
        gw.end_call(call, None, "timeout" if e.status == 504 else "failed", e.message)
        raise ApiError(e.status, f"node {n.name}: {e.message}", e.type) from None
    except asyncio.CancelledError:
        gw.end_call(call, None, "cancelled", "the task was cancelled")
        raise
    status, error = "cancelled", "the task was cancelled"
    try:
        if up.status >= 400:
            status, error = "rejected", excerpt(up.first.decode("utf-8", "replace"))
            raise ApiError(502, f"node {n.name}: replica {up.replica.id} rejected the call: {error}", "upstream_error")
        text, usage = [], None
        buffer = up.first
        async for chunk in _chunks(up):
            buffer += chunk
        for line in buffer.split(b"\n"):
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise ApiError(
                    502, f"node {n.name}: stream error {excerpt(json.dumps(event['error']))}", "upstream_error"
                )
            for choice in event.get("choices") or ():
                text.append(choice.get("text") or "")
            usage = event.get("usage") or usage
        status, error = "ok", None
        return {"text": "".join(text), "usage": usage}
    except StreamBroken as e:
        status, error = ("timeout" if e.timeout else "failed"), e.reason
        raise (
            ApiError(504, f"node {n.name}: {error}", "timeout_error")
            if e.timeout
            else ApiError(502, f"node {n.name}: {error}", "upstream_error")
        ) from None
    except ApiError as e:
        if status == "cancelled":
            status, error = "failed", e.message
        raise
    finally:
        gw.end_call(call, up.replica, status, error)
        with anyio.CancelScope(shield=True):
            await up.aclose()


async def _chunks(up):
    if up.rest is not None:
        async for chunk in up.rest:
            yield chunk
