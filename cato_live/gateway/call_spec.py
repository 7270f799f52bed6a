"""What the gateway reads from one OpenAI-style call: model, task type, tokens and deadline.

The task type, SLA and deadline come from a ``cato`` field of the body (stripped before the
call goes on) or from headers; the body's field wins::

    X-CATO-Task: completion       cato.task         task type (else DEPLOY default_task_type)
    X-CATO-SLA-Ms: 800            cato.sla_ms       the task's SLA (else the type's)
    X-CATO-Deadline-Ms: 120.5     cato.deadline_ms  ms from receipt to this call's deadline
    X-CATO-Task-Id: t-17          cato.task_id      groups a task's calls in the records
    X-CATO-Node: llm              cato.node         which LLM node of the type (else the last)

Prompt tokens are the length of a token-ID prompt, or estimated from text at DEPLOY's
``chars_per_token``; output tokens are ``max_tokens`` (else DEPLOY's default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cato_core.profile import DeviceProfile
from cato_core.task_plan import NodePlan, TaskPlan
from cato_live import headers as H
from cato_live.deploy import Deploy
from cato_live.gateway.api_error import ApiError

CATO_FIELDS = ("task", "sla_ms", "deadline_ms", "task_id", "node")
HEADERS = {
    "task": H.TASK.lower(),  # Starlette's Headers and the tests' dicts are keyed in lower case
    "sla_ms": H.SLA_MS.lower(),
    "deadline_ms": H.DEADLINE_MS.lower(),
    "task_id": H.TASK_ID.lower(),
    "node": H.NODE.lower(),
}


@dataclass(slots=True)
class CallSpec:
    model: str
    plan: TaskPlan
    node: NodePlan
    task_id: str | None
    prompt_tokens: int
    output_tokens: int
    deadline_s: float
    sla_s: float
    stream: bool
    body: dict[str, Any]  # what goes to the replica: cato stripped, the served model's name


def _cato_fields(body: dict, headers: Mapping[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {k: headers.get(h) for k, h in HEADERS.items()}
    extra = body.get("cato")
    if extra is not None:
        if not isinstance(extra, dict):
            raise ApiError(400, f"cato: an object with some of {list(CATO_FIELDS)}")
        unknown = sorted(set(extra) - set(CATO_FIELDS))
        if unknown:
            raise ApiError(400, f"cato: unknown field(s) {unknown}; expected some of {list(CATO_FIELDS)}")
        fields.update({k: v for k, v in extra.items() if v is not None})
    return fields


def _number(value: Any, what: str, positive: bool) -> float | None:
    if value is None:
        return None
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or (positive and x <= 0):
        raise ApiError(400, f"{what}: a {'positive ' if positive else ''}number of milliseconds, got {value!r}")
    return x


def _is_ids(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def prompt_tokens(kind: str, body: dict, chars_per_token: float) -> int:
    """Exact for token-ID prompts, estimated from characters for text (at least 1)."""
    chars = 0
    tokens = 0
    if kind == "completions":
        prompt = body.get("prompt")
        items = prompt if isinstance(prompt, list) and prompt and not _is_ids(prompt) else [prompt]
        for p in items:
            if isinstance(p, str):
                chars += len(p)
            elif _is_ids(p) and p:
                tokens += len(p)
            else:
                raise ApiError(400, "prompt: a string, a list of token ids, or a list of those")
    else:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "messages: a non-empty list of message objects")
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return max(1, tokens + math.ceil(chars / chars_per_token))


def parse_call(
    kind: str,
    body: Any,
    headers: Mapping[str, str],
    deploy: Deploy,
    plans: Mapping[str, TaskPlan],
    profiles: Mapping[str, DeviceProfile],
    now: float,
) -> CallSpec:
    """Check one call (``kind``: completions | chat) and resolve its deadline; ApiError if bad."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    model = body.get("model", deploy.default_model)
    if not isinstance(model, str):
        raise ApiError(400, "model: a string")
    if model not in deploy.models:
        raise ApiError(404, f"model {model!r} is not served here; models: {sorted(deploy.models)}", "not_found_error")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream: true or false")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise ApiError(400, f"max_tokens: a whole number >= 1, got {max_tokens!r}")
    output = max_tokens or deploy.default_max_tokens
    fields = _cato_fields(body, headers)
    task = fields["task"] or deploy.default_task_type
    if task is None:
        raise ApiError(400, f"no task type: send the X-CATO-Task header or cato.task (one of {sorted(plans)})")
    plan = plans.get(task) if isinstance(task, str) else None
    if plan is None:
        raise ApiError(400, f"unknown task type {task!r}; expected one of {sorted(plans)}")
    try:
        node = plan.node(fields["node"])
    except KeyError:
        llm = [n.name for n in plan.nodes if n.kind == "llm"]
        raise ApiError(400, f"task type {task!r} has no LLM node {fields['node']!r}; LLM nodes: {llm}") from None
    if node.model != model:
        raise ApiError(400, f"task type {task!r} node {node.name!r} runs on model {node.model!r}, not {model!r}")
    sla_ms = _number(fields["sla_ms"], "sla_ms (X-CATO-SLA-Ms)", positive=True)
    deadline_ms = _number(fields["deadline_ms"], "deadline_ms (X-CATO-Deadline-Ms)", positive=False)
    task_id = fields["task_id"]
    if task_id is not None and not isinstance(task_id, str):
        raise ApiError(400, "task_id: a string")
    prompt = prompt_tokens(kind, body, deploy.chars_per_token)
    deadline, sla = plan.call_deadline(
        node,
        profiles,
        prompt,
        output,
        now,
        sla_ms / 1000.0 if sla_ms is not None else None,
        deadline_ms / 1000.0 if deadline_ms is not None else None,
    )
    forward = {k: v for k, v in body.items() if k != "cato"}
    forward["model"] = deploy.served_name(model)
    return CallSpec(model, plan, node, task_id, prompt, output, deadline, sla, stream, forward)
