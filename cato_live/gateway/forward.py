"""Sending one call to a replica, and trying another when that replica fails it.

An attempt fails when the replica refuses the connection (it is then taken out of routing
as dead), resets it, answers HTTP 5xx, or stays silent past ``first_byte_timeout_s``. The
call is routed again, to a replica it has not tried, while it has attempts left, its
deadline has not passed (unless DEPLOY's ``retry.past_deadline``), and its
``request_timeout_s`` has not run out; otherwise it ends with a 502 (or 504 after a
timeout). Nothing has reached the client during an attempt: a non-streamed answer is read
whole inside it, a streamed one up to its first chunk. A connection closed before any
answer (most often a kept-alive one the replica was closing as we sent) is tried once more,
on a new connection, within the same attempt.

The replica's client is aiohttp (see cato_live.gateway.replica_client). Nothing past this module
sees it: a stream that breaks after its first chunk raises :class:`StreamBroken`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from cato_live.deploy import Deploy
from cato_live.error_text import describe, excerpt
from cato_live.gateway.api_error import ApiError
from cato_live.gateway.fleet import Fleet
from cato_live.gateway.live_pool import Call, LivePool, LiveReplica

JSON_HEADERS = {"content-type": "application/json"}


class StreamBroken(Exception):
    """A replica's stream failed after its first chunk had gone to the client."""

    def __init__(self, reason: str, timeout: bool):
        super().__init__(reason)
        self.reason, self.timeout = reason, timeout


@dataclass(slots=True)
class Upstream:
    """A replica's answer: whole (``first``, ``rest`` None), or begun (``first``, then ``rest``)."""

    replica: LiveReplica
    status: int
    content_type: str | None
    response: aiohttp.ClientResponse
    first: bytes
    rest: AsyncIterator[bytes] | None  # None: ``first`` is the whole body

    async def aclose(self) -> None:
        # An unread rest means the connection is mid-answer: drop it rather than reuse it.
        if self.response.content.at_eof():
            self.response.release()
        else:
            self.response.close()


class _AttemptFailed(Exception):
    def __init__(self, reason: str, timeout: bool = False, dead: bool = False):
        super().__init__(reason)
        self.reason, self.timeout, self.dead = reason, timeout, dead


def _failed(rep: LiveReplica, e: aiohttp.ClientError) -> _AttemptFailed:
    if isinstance(e, aiohttp.ClientConnectorError):
        return _AttemptFailed(f"replica {rep.id} refused the connection ({describe(e)})", dead=True)
    if isinstance(e, aiohttp.ServerTimeoutError):
        return _AttemptFailed(f"replica {rep.id} was silent past its timeout ({describe(e)})", timeout=True)
    return _AttemptFailed(f"replica {rep.id} failed the call ({describe(e)})")


async def _rest(rep: LiveReplica, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except aiohttp.ClientError as e:
        raise StreamBroken(
            f"replica {rep.id} failed mid-stream ({describe(e)})", isinstance(e, aiohttp.ServerTimeoutError)
        ) from None


async def _wait_grant(call: Call, pool: LivePool) -> LiveReplica:
    """Wait for a slot on some replica, until the call's request_timeout_s runs out."""
    try:
        async with asyncio.timeout(max(call.give_up_s - pool.clock(), 0.0)):
            return await call.granted
    except TimeoutError:
        _abandon(call, pool)
        raise ApiError(
            504,
            f"no replica of {pool.model!r} took the call within its request timeout "
            f"({call.last_error or 'all busy or starting'})",
            "timeout_error",
        ) from None
    except asyncio.CancelledError:  # the client went away while the call waited
        _abandon(call, pool)
        raise


def _abandon(call: Call, pool: LivePool) -> None:
    """Skip the call wherever it is held; hand back a slot granted in the same instant."""
    call.r.cancelled = True
    g = call.granted
    if g.done() and not g.cancelled() and g.exception() is None:
        pool.done(g.result(), call)


async def _attempt(rep: LiveReplica, call: Call, content: bytes, remaining: float) -> Upstream:
    try:
        async with asyncio.timeout(max(remaining, 0.0)):
            return await _send(rep, call, content)
    except TimeoutError:  # the call's own request timeout (the replica's are ClientErrors)
        raise _AttemptFailed(f"replica {rep.id} sent nothing within the call's request timeout", timeout=True) from None


async def _send(rep: LiveReplica, call: Call, content: bytes) -> Upstream:
    url = rep.handle.base_url.rstrip("/") + call.path

    async def post() -> aiohttp.ClientResponse:
        if rep.client.closed:  # another call found the replica dead and it was taken out
            raise _AttemptFailed(f"replica {rep.id} was taken out of routing ({rep.failed or 'released'})")
        return await rep.client.post(url, data=content, headers=JSON_HEADERS)

    try:
        try:
            response = await post()
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            if isinstance(e, aiohttp.ClientConnectorError):
                raise
            # Closed before any answer: most likely a kept-alive connection the replica closed
            # as we sent. Once more, on another connection; a dead replica then refuses it.
            response = await post()
    except aiohttp.ClientError as e:
        raise _failed(rep, e) from None
    try:
        if response.status >= 500:
            text = (await response.read()).decode("utf-8", "replace")
            raise _AttemptFailed(f"replica {rep.id} answered HTTP {response.status}: {excerpt(text)}")
        media = response.headers.get("content-type")
        if not call.stream or response.status >= 400:
            body = await response.read()
            response.release()
            return Upstream(rep, response.status, media, response, body, None)
        first = await response.content.readany()
        return Upstream(rep, response.status, media, response, first, _rest(rep, response))
    except aiohttp.ClientError as e:
        response.close()
        raise _failed(rep, e) from None
    except BaseException:
        response.close()
        raise


async def open_call(fleet: Fleet, pool: LivePool, call: Call, deploy: Deploy) -> Upstream:
    """Route, wait for a slot and send; retry elsewhere on failure. The caller must hand the
    slot back with ``pool.done(up.replica, call)`` once it has read the answer."""
    send_priority = deploy.models[pool.model].priority_scheduling
    rec = call.record
    while True:
        pool.submit(call)
        rep = await _wait_grant(call, pool)
        rec.attempts.append(rep.id)
        if send_priority:
            call.body["priority"] = rec.sent_priority = call.r.priority
        content = json.dumps(call.body, separators=(",", ":")).encode()
        try:
            up = await _attempt(rep, call, content, call.give_up_s - pool.clock())
        except _AttemptFailed as e:
            failure = e
        except asyncio.CancelledError:
            pool.done(rep, call)  # the client went away mid-attempt
            raise
        else:
            rec.first_token_s = pool.clock()
            return up
        pool.done(rep, call)
        if failure.dead:
            fleet.fail(pool, rep, failure.reason)
        now = pool.clock()
        why_not = None
        if len(rec.attempts) >= deploy.retry.max_attempts:
            why_not = f"after {len(rec.attempts)} attempt(s)"
        elif now >= call.give_up_s:
            why_not = "its request timeout has run out"
        elif now >= call.r.deadline_s and not deploy.retry.past_deadline:
            why_not = f"its deadline passed {now - call.r.deadline_s:.3f} s ago"
        if why_not is not None:
            status = 504 if failure.timeout else 502
            raise ApiError(
                status,
                f"{failure.reason}; not retried: {why_not}",
                "timeout_error" if failure.timeout else "upstream_error",
            )
        pool.metrics.retry(pool.model)
        call.new_attempt(rep.id, failure.reason)
