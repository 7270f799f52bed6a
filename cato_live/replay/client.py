"""One streamed OpenAI-style completion request, timed at the client.

``stream_completion`` POSTs a ``/v1/completions`` body with ``stream: true`` on a shared
``aiohttp.ClientSession`` and reads vLLM's server-sent events (``data: {...}`` lines, a final
usage chunk, ``data: [DONE]``). It returns when the stream is complete and raises
:class:`RequestFailed` (status ``failed`` or ``timeout``, with a reason) otherwise.

Times come from ``clock`` (seconds, monotonic): the first token is the first event that
carries a choice (vLLM sends no empty deltas), the end is when ``[DONE]`` arrives.

aiohttp, as in vLLM's own benchmark client and the gateway: the client's share of every
TTFT it measures is part of the figure. Through a gateway to the tiny model on this 2-core
host, httpx added about 3 ms to a lone request's median TTFT over a bare socket reader, and
aiohttp 0-1 ms.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from cato_live.error_text import describe, error_message, excerpt
from cato_live.headers import PRIORITY as PRIORITY_HEADER
from cato_live.headers import REPLICA as REPLICA_HEADER

TIMEOUT_STATUSES = (408, 504)


class RequestFailed(Exception):
    """A request that did not complete: ``status`` is ``failed`` or ``timeout``."""

    def __init__(
        self,
        status: str,
        reason: str,
        replica: str | None = None,
        priority: int | None = None,
        first_token_s: float | None = None,
    ):
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.replica, self.priority, self.first_token_s = replica, priority, first_token_s
        self.node: str | None = None  # set by the replayer: which task node it was


@dataclass(slots=True)
class StreamResult:
    first_token_s: float | None
    end_s: float
    prompt_tokens: int | None  # from the usage chunk (None if the server sent none)
    output_tokens: int | None
    replica: str | None  # X-CATO-Replica of the response, if the server is a CATO gateway
    priority: int | None  # X-CATO-Priority of the response


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


async def stream_completion(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping,
    headers: Mapping[str, str],
    clock: Callable[[], float],
    timeout_s: float,
) -> StreamResult:
    """Send one streamed completion and read it to the end (see the module docstring)."""
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    first = None
    replica = priority = None
    usage = None
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(url, json=payload, headers=dict(headers)) as resp:
                replica = resp.headers.get(REPLICA_HEADER)
                priority = _int_header(resp.headers, PRIORITY_HEADER)
                if resp.status >= 400:
                    text = (await resp.read()).decode("utf-8", "replace")
                    # A gateway or proxy in between answers 504 (408) when the server was too slow.
                    status = "timeout" if resp.status in TIMEOUT_STATUSES else "failed"
                    raise RequestFailed(status, f"HTTP {resp.status}: {error_message(text)}", replica, priority)
                done = False
                async for raw in resp.content:  # line by line
                    if not raw.startswith(b"data:"):
                        continue
                    data = raw[5:].strip().decode("utf-8", "replace")
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        event = json.loads(data)
                    except ValueError:
                        raise RequestFailed(
                            "failed", f"bad stream event: {excerpt(data)}", replica, priority, first
                        ) from None
                    if "error" in event:  # vLLM (and the gateway) report errors after the headers this way
                        err = event["error"]
                        status = "timeout" if isinstance(err, dict) and err.get("type") == "timeout_error" else "failed"
                        raise RequestFailed(
                            status, f"stream error: {error_message(json.dumps(event))}", replica, priority, first
                        )
                    if first is None and event.get("choices"):
                        first = clock()
                    if event.get("usage"):
                        usage = event["usage"]
                if not done:
                    raise RequestFailed("failed", "stream ended without [DONE]", replica, priority, first)
    except TimeoutError:
        raise RequestFailed(
            "timeout", f"no complete response within {timeout_s:g} s", replica, priority, first
        ) from None
    except aiohttp.ClientError as e:
        raise RequestFailed("failed", describe(e), replica, priority, first) from None
    end = clock()
    return StreamResult(
        first,
        end,
        usage.get("prompt_tokens") if usage else None,
        usage.get("completion_tokens") if usage else None,
        replica,
        priority,
    )
