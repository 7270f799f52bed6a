"""The replayer's client (`cato_live.replay.client.stream_completion`) against a real local HTTP
server: how each way a server can fail becomes a status and a one-line reason."""

from __future__ import annotations

import asyncio
import itertools
import json

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from cato_live.background import serve_in_thread
from cato_live.error_text import error_message
from cato_live.replay.client import RequestFailed, stream_completion


def sse(*events) -> StreamingResponse:
    async def gen():
        for e in events:
            yield "data: " + (e if isinstance(e, str) else json.dumps(e)) + "\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream")


CHUNK = {"choices": [{"index": 0, "text": "a"}]}
ANSWERS = {
    "ok": lambda: sse(CHUNK, CHUNK, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}, "[DONE]"),
    "vllm500": lambda: JSONResponse({"object": "error", "message": "engine dead", "code": 500}, 500),
    "gateway502": lambda: JSONResponse(
        {"error": {"message": "replica r1 answered HTTP 500: engine dead", "type": "upstream_error", "code": 502}},
        502,
        headers={"X-CATO-Replica": "r1"},
    ),
    "gateway504": lambda: JSONResponse(
        {"error": {"message": "replica r1 was silent past its timeout", "type": "timeout_error", "code": 504}}, 504
    ),
    "proxy502": lambda: PlainTextResponse("<html>\n  Bad   Gateway\n</html>", 502),
    "midstream": lambda: sse(
        CHUNK,
        {
            "error": {
                "message": "replica r1 failed mid-stream: RemoteProtocolError",
                "type": "upstream_error",
                "code": 502,
            }
        },
        "[DONE]",
    ),
    "late": lambda: sse(
        CHUNK,
        {"error": {"message": "replica r1 was silent past its timeout", "type": "timeout_error", "code": 504}},
        "[DONE]",
    ),
    "cut": lambda: sse(CHUNK),
}


async def answer(request: Request) -> Response:
    return ANSWERS[request.headers["x-answer"]]()


@pytest.fixture(scope="module")
def server():
    with serve_in_thread(Starlette(routes=[Route("/v1/completions", answer, methods=["POST"])])) as url:
        yield url


def call(url: str, kind: str):
    ticks = itertools.count(1)

    async def go():
        async with aiohttp.ClientSession() as c:
            return await stream_completion(
                c,
                url + "/v1/completions",
                {"prompt": [1, 2, 3], "max_tokens": 2},
                {"x-answer": kind},
                lambda: float(next(ticks)),
                10.0,
            )

    return asyncio.run(go())


def failure(url: str, kind: str) -> RequestFailed:
    with pytest.raises(RequestFailed) as info:
        call(url, kind)
    return info.value


def test_a_complete_stream_is_timed_on_the_given_clock(server):
    got = call(server, "ok")
    # The clock ticks 1, 2, ...: the first chunk read is tick 1, [DONE] tick 2.
    assert (got.first_token_s, got.end_s, got.prompt_tokens, got.output_tokens) == (1.0, 2.0, 3, 2)


@pytest.mark.parametrize(
    "kind, status, reason, first",
    [
        ("vllm500", "failed", "HTTP 500: engine dead", None),
        ("gateway502", "failed", "HTTP 502: replica r1 answered HTTP 500: engine dead", None),
        ("gateway504", "timeout", "HTTP 504: replica r1 was silent past its timeout", None),
        ("proxy502", "failed", "HTTP 502: <html> Bad Gateway </html>", None),
        ("midstream", "failed", "stream error: replica r1 failed mid-stream: RemoteProtocolError", 1.0),
        ("late", "timeout", "stream error: replica r1 was silent past its timeout", 1.0),
        ("cut", "failed", "stream ended without [DONE]", 1.0),
    ],
)
def test_each_failure_becomes_a_status_and_one_line(server, kind, status, reason, first):
    e = failure(server, kind)
    assert (e.status, e.reason, e.first_token_s) == (status, reason, first)


def test_the_gateways_replica_header_is_kept_on_failure(server):
    assert failure(server, "gateway502").replica == "r1"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"error": {"message": "a"}}', "a"),
        ('{"object": "error", "message": "b"}', "b"),
        ('{"error": "c"}', "c"),
        ("[1, 2]", "[1, 2]"),
        ("not json\n at all", "not json at all"),
    ],
)
def test_error_message(text, message):
    assert error_message(text) == message
