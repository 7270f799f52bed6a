"""The gateway without vLLM: deadlines worked by hand, request checks, and the whole request
path against stand-in replicas (``fake_vllm``, also used beside real vLLM in tests/live)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from contextlib import ExitStack, contextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cato_core.task_plan import compile_plans
from cato_live.background import serve_in_thread
from cato_live.deploy import parse_deploy
from cato_live.gateway.api_error import ApiError
from cato_live.gateway.app import create_app
from cato_live.gateway.call_spec import parse_call, prompt_tokens

ROUND = {
    "name": "round",
    "model": "m",
    "device": "d",
    "overhead_s": 0.01,
    "per_token_s": 0.001,
    "prefill_attn_s": 0.0,
    "decode_ctx_s": 0.0,
    "kv_capacity_tokens": 100000,
    "cold_start_s": 5.0,
}
SERVED = "cato-tiny"
TIMER = 0.002  # uvloop's timers tick in whole milliseconds: a sleep may end that much early


# -- a stand-in replica -------------------------------------------------------------------------
def fake_vllm(mode: str = "ok", served: str = SERVED, seen: list | None = None) -> Starlette:
    """Answers like vLLM (exact usage: prompt ids, max_tokens), or fails one way:
    error500 (HTTP 500), hang (accepts, never answers), midstream (drops a stream after 2 chunks),
    linger (sends its [DONE] 0.5 s after the last token, so a client can leave before it, then
    holds the stream open for 2 s)."""
    seen = seen if seen is not None else []

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": served, "object": "model"}]})

    async def completions(request: Request) -> Response:
        body = await request.json()
        seen.append(body)
        if mode == "error500":
            return JSONResponse({"error": {"message": "engine dead", "type": "InternalServerError"}}, 500)
        if mode == "hang":
            while not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return Response(status_code=499)
        if body.get("model") != served:
            return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does not exist."}}, 404)
        n = body.get("max_tokens") or 16
        prompt = body.get("prompt", "")
        p = len(prompt) if isinstance(prompt, list) else max(1, len(str(prompt)) // 4)
        usage = {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n}
        if body.get("stream"):

            async def events():
                for i in range(n):
                    if mode == "midstream" and i == 2:
                        raise ConnectionResetError("fake replica dies mid-stream")
                    yield "data: " + json.dumps({"choices": [{"index": 0, "text": f"t{i} "}]}) + "\n\n"
                    await asyncio.sleep(0.001)
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
                if mode == "linger":
                    await asyncio.sleep(0.5)
                yield "data: [DONE]\n\n"
                if mode == "linger":
                    await asyncio.sleep(2.0)

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "model": served,
                "choices": [{"index": 0, "text": "t " * n, "finish_reason": "length"}],
                "usage": usage,
            }
        )

    app = Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ]
    )
    app.state.seen = seen
    return app


def deploy_tree(urls: list[str], **over) -> dict:
    model = {
        "profile": ROUND,
        "served_model": SERVED,
        "replicas": len(urls),
        "max_num_seqs": 4,
        "priority_scheduling": True,
        "request_timeout_s": 5.0,
        "first_byte_timeout_s": 1.0,
    }
    model.update(over.pop("model", {}))
    tree = {
        "router": "round_robin",
        "default_task_type": "generation",
        "tools": {"retrieve": 0.05, "validate": 0.1},
        "models": {"tiny": model},
        "provisioner": {"kind": "static", "models": {"tiny": urls}, "ready_timeout_s": 10},
    }
    tree.update(over)
    return tree


@contextmanager
def gateway(urls: list[str], **over):
    """The gateway app served in a thread over ``urls``; yields (base URL, Gateway)."""
    app = create_app(parse_deploy(deploy_tree(urls, **over), "test.yaml"))
    with serve_in_thread(app) as url:
        yield url, app.state.gateway


@contextmanager
def fakes(*modes: str):
    """Stand-in replicas; yields [(url, seen bodies)]."""
    with ExitStack() as stack:
        out = []
        for mode in modes:
            seen: list = []
            url = stack.enter_context(serve_in_thread(fake_vllm(mode, seen=seen), log_level="critical", graceful_s=1.0))
            out.append((url, seen))
        yield out


def completion(n_prompt=8, max_tokens=4, **extra) -> dict:
    return {"model": "tiny", "prompt": list(range(10, 10 + n_prompt)), "max_tokens": max_tokens, **extra}


def read_sse(text: str) -> list:
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# -- deadlines, worked by hand --------------------------------------------------------------------
@pytest.fixture(scope="module")
def parsed():
    d = parse_deploy(deploy_tree(["http://127.0.0.1:9"]), "test.yaml")
    return d, compile_plans(d.task_types, d.default_model, d.tools), {"tiny": d.profile("tiny")}


def call(parsed, body, headers=None, kind="completions", now=100.0):
    d, plans, profiles = parsed
    return parse_call(kind, body, headers or {}, d, plans, profiles, now)


# Round profile: prefill(100) = 0.01 + 0.1 = 0.11 s; decode(100, 50) = 49 * 0.011 = 0.539 s.
@pytest.mark.parametrize(
    "task, headers, deadline, sla",
    [
        ("generation", {}, 0.33, 0.33),  # TTFT: 3 x prefill; one node: budget = SLA
        ("summarization", {}, 1.947, 1.947),  # E2E: 3 x (prefill + decode)
        ("completion", {}, 0.33, 0.48),  # retrieve 0.05 + llm 0.11 -> SLA 0.48, llm budget 0.48*0.11/0.16
        ("translation", {}, 1.947, 2.247),  # llm 0.649 + validate 0.1 (DEPLOY tools): SLA 3 x 0.749
        ("completion", {"x-cato-sla-ms": "1000"}, 0.6875, 1.0),  # given SLA: budget 1.0 * 0.11/0.16
        ("completion", {"x-cato-deadline-ms": "250"}, 0.25, 0.48),  # given deadline: as is
        ("generation", {"x-cato-deadline-ms": "-20"}, -0.02, 0.33),  # already late
    ],
)
def test_call_deadlines_by_hand(parsed, task, headers, deadline, sla):
    spec = call(parsed, completion(100, 50), {"x-cato-task": task, **headers})
    assert spec.deadline_s - 100.0 == pytest.approx(deadline)
    assert spec.sla_s == pytest.approx(sla)
    assert (spec.prompt_tokens, spec.output_tokens) == (100, 50)
    assert spec.node.name == "llm" and spec.node.ttft_only == (task in ("generation", "completion"))


def test_body_field_wins_over_headers_and_is_stripped(parsed):
    body = completion(100, 50, cato={"task": "summarization", "sla_ms": 500, "task_id": "t-1"})
    spec = call(parsed, body, {"x-cato-task": "generation", "x-cato-sla-ms": "9000"})
    assert spec.plan.name == "summarization" and spec.sla_s == 0.5 and spec.task_id == "t-1"
    assert spec.body == {"model": SERVED, "prompt": list(range(10, 110)), "max_tokens": 50}


def test_prompt_tokens_exact_for_ids_estimated_for_text():
    assert prompt_tokens("completions", {"prompt": [1, 2, 3]}, 4.0) == 3
    assert prompt_tokens("completions", {"prompt": "x" * 10}, 4.0) == 3  # ceil(10 / 4)
    assert prompt_tokens("completions", {"prompt": [[1, 2], [3]]}, 4.0) == 3
    assert prompt_tokens("completions", {"prompt": ["abcd", "abcdefgh"]}, 4.0) == 3
    chat = {
        "messages": [
            {"role": "user", "content": "x" * 7},
            {"role": "user", "content": [{"type": "text", "text": "y" * 9}]},
        ]
    }
    assert prompt_tokens("chat", chat, 4.0) == 4  # ceil(16 / 4)


def test_missing_max_tokens_uses_the_deploy_default(parsed):
    assert call(parsed, {"model": "tiny", "prompt": [1, 2]}).output_tokens == 16


@pytest.mark.parametrize(
    "body, headers, status, message",
    [
        ([1, 2], {}, 400, "the body must be a JSON object"),
        ({"model": "gpt-4", "prompt": "x"}, {}, 404, "model 'gpt-4' is not served here; models: ['tiny']"),
        ({"model": 7, "prompt": "x"}, {}, 400, "model: a string"),
        (
            {"model": "tiny", "prompt": "x"},
            {"x-cato-task": "poetry"},
            400,
            "unknown task type 'poetry'; expected one of ['completion', 'generation', 'summarization', 'translation']",
        ),
        (
            {"model": "tiny", "prompt": "x"},
            {"x-cato-sla-ms": "soon"},
            400,
            "sla_ms (X-CATO-SLA-Ms): a positive number of milliseconds, got 'soon'",
        ),
        (
            {"model": "tiny", "prompt": "x"},
            {"x-cato-sla-ms": "0"},
            400,
            "sla_ms (X-CATO-SLA-Ms): a positive number of milliseconds, got '0'",
        ),
        (
            {"model": "tiny", "prompt": "x"},
            {"x-cato-deadline-ms": "nan"},
            400,
            "deadline_ms (X-CATO-Deadline-Ms): a number of milliseconds, got 'nan'",
        ),
        ({"model": "tiny", "prompt": "x", "max_tokens": 0}, {}, 400, "max_tokens: a whole number >= 1, got 0"),
        ({"model": "tiny", "prompt": "x", "stream": "yes"}, {}, 400, "stream: true or false"),
        ({"model": "tiny", "prompt": {"a": 1}}, {}, 400, "prompt: a string, a list of token ids, or a list of those"),
        (
            {"model": "tiny", "prompt": "x", "cato": {"when": 1}},
            {},
            400,
            "cato: unknown field(s) ['when']; expected some of ['task', 'sla_ms', 'deadline_ms', 'task_id', 'node']",
        ),
        (
            {"model": "tiny", "prompt": "x"},
            {"x-cato-node": "retrieve"},
            400,
            "task type 'generation' has no LLM node 'retrieve'; LLM nodes: ['llm']",
        ),
    ],
)
def test_bad_calls_are_4xx_with_a_clear_message(parsed, body, headers, status, message):
    with pytest.raises(ApiError) as e:
        call(parsed, body, headers)
    assert (e.value.status, e.value.message) == (status, message)


def test_no_task_type_without_a_default(parsed):
    d, plans, profiles = parsed
    bare = d.model_copy(update={"default_task_type": None})
    with pytest.raises(ApiError) as e:
        parse_call("completions", {"model": "tiny", "prompt": "x"}, {}, bare, plans, profiles, 0.0)
    assert e.value.status == 400 and e.value.message.startswith("no task type: send the X-CATO-Task header")


def test_chat_needs_messages(parsed):
    with pytest.raises(ApiError) as e:
        call(parsed, {"model": "tiny", "messages": []}, kind="chat")
    assert e.value.message == "messages: a non-empty list of message objects"


# -- the request path against stand-in replicas ---------------------------------------------------
def test_round_robin_alternates_and_sends_priority_and_served_name():
    with fakes("ok", "ok") as reps, gateway([u for u, _ in reps]) as (url, _):
        with httpx.Client(base_url=url) as c:
            got = []
            for i in range(6):
                r = c.post(
                    "/v1/completions",
                    json=completion(8, 3, cato={"task_id": f"t{i}"}),
                    headers={"X-CATO-Task": "generation"},
                )
                assert r.status_code == 200, r.text
                assert r.json()["usage"] == {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11}
                got.append(r.headers["x-cato-replica"])
                assert r.headers["x-cato-priority"] == "2" and r.headers["x-cato-task-id"] == f"t{i}"
            assert got == ["tiny-1", "tiny-2"] * 3
            rows = {row["replica_id"]: row for row in c.get("/v1/cato/replicas").json()["replicas"]}
            assert {k: v["requests"] for k, v in rows.items()} == {"tiny-1": 3, "tiny-2": 3}
            assert all(
                v["state"] == "ready" and v["asked_s"] <= v["ready_s"] and v["released_s"] is None
                for v in rows.values()
            )
            nodes = c.get("/v1/cato/nodes").json()["nodes"]
        for _, seen in reps:
            assert len(seen) == 3
            assert all(b["model"] == SERVED and b["priority"] == 2 and "cato" not in b for b in seen)
        assert [n["task_id"] for n in nodes] == [f"t{i}" for i in range(6)]
        assert all(
            n["status"] == "ok"
            and n["sent_priority"] == 2
            and n["attempts"] == [n["replica"]]
            and n["queued_s"] <= n["start_s"] <= n["first_token_s"] <= n["end_s"]
            for n in nodes
        )


def test_no_priority_field_without_priority_scheduling():
    with fakes("ok") as reps, gateway([reps[0][0]], model={"priority_scheduling": False}) as (url, _):
        assert httpx.post(url + "/v1/completions", json=completion()).status_code == 200
        assert "priority" not in reps[0][1][0]


def test_stream_passes_the_replicas_bytes_through():
    body = completion(8, 5, stream=True, stream_options={"include_usage": True})
    with fakes("ok") as reps, gateway([reps[0][0]]) as (url, _):
        direct = httpx.post(reps[0][0] + "/v1/completions", json={**body, "model": SERVED}).text
        via = httpx.post(url + "/v1/completions", json=body)
    assert via.status_code == 200 and via.headers["content-type"].startswith("text/event-stream")
    assert via.text == direct
    events = read_sse(via.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("read_to, status", [("[DONE]", "ok"), ("t1 ", "cancelled")])
def test_a_client_leaving_after_done_has_had_its_answer(read_to, status):
    """The replica keeps the stream open past its [DONE]: a client that read the [DONE] and
    left had the whole answer (ok); one that left before it did not (cancelled)."""
    with fakes("linger") as reps, gateway([reps[0][0]]) as (url, _):
        with httpx.stream("POST", url + "/v1/completions", json=completion(8, 3, stream=True)) as r:
            for line in r.iter_lines():
                if read_to in line:
                    break
        end = time.monotonic() + 1.5
        while (node := httpx.get(url + "/v1/cato/nodes").json()["nodes"][0])["status"] == "running":
            assert time.monotonic() < end, "the gateway never ended the call"
            time.sleep(0.02)
    assert (node["status"], node["error"]) == (status, None if status == "ok" else "the client went away")


def test_chat_completions_are_routed_too():
    with fakes("ok") as reps, gateway([reps[0][0]]) as (url, _):
        r = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        assert r.status_code == 200 and reps[0][1][0]["messages"][0]["content"] == "hi"


def error_of(r: httpx.Response) -> tuple[int, str, str]:
    e = r.json()["error"]
    return r.status_code, e["type"], e["message"]


def test_bad_http_input_gets_json_errors_and_never_reaches_a_replica():
    with fakes("ok") as reps, gateway([reps[0][0]], max_body_bytes=2048) as (url, _), httpx.Client(base_url=url) as c:

        def post(content):
            return c.post("/v1/completions", content=content, headers={"content-type": "application/json"})

        assert error_of(post(b"{not json"))[:2] == (400, "invalid_request_error")
        assert error_of(post(b"{not json"))[2].startswith("the body is not valid JSON")
        assert error_of(post(json.dumps({"model": "tiny", "prompt": "x" * 4000}).encode())) == (
            413,
            "request_too_large",
            "the body is over the limit of 2048 bytes",
        )

        def chunked():
            yield b'{"model": "tiny", "prompt": "'
            yield b"x" * 4000
            yield b'"}'

        assert post(chunked()).status_code == 413  # no Content-Length: counted while read
        assert error_of(c.post("/v1/completions", json={"model": "nope", "prompt": "x"}))[:2] == (
            404,
            "not_found_error",
        )
        assert error_of(
            c.post("/v1/completions", json={"model": "tiny", "prompt": "x"}, headers={"X-CATO-Task": "poetry"})
        )[:2] == (400, "invalid_request_error")
        assert error_of(c.get("/v1/nothing")) == (404, "not_found_error", "Not Found")
        assert error_of(c.get("/v1/completions")) == (405, "invalid_request_error", "Method Not Allowed")
        assert error_of(c.post("/v1/tasks", json={"task": "generation", "max_tokens": 2})) == (
            400,
            "invalid_request_error",
            "body: give exactly one of 'prompt' or 'prompt_token_ids'",
        )
    assert reps[0][1] == []


def test_bearer_token():
    with fakes("ok") as reps, gateway([reps[0][0]], token="s3cret") as (url, _), httpx.Client(base_url=url) as c:
        r = c.post("/v1/completions", json=completion())
        assert error_of(r) == (
            401,
            "authentication_error",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        )
        assert r.headers["www-authenticate"] == "Bearer"
        assert (
            c.post("/v1/completions", json=completion(), headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        for path in ("/metrics", "/v1/cato/replicas", "/v1/cato/nodes", "/v1/models"):
            assert c.get(path).status_code == 401
        assert c.get("/health").status_code == 200
        ok = c.post("/v1/completions", json=completion(), headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_metrics_expose_queues_priorities_replicas_and_in_flight():
    with fakes("ok", "ok") as reps, gateway([u for u, _ in reps]) as (url, _):
        for _ in range(3):
            httpx.post(url + "/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "0.001"})
        text = httpx.get(url + "/metrics").text
    assert 'cato_requests_routed_total{model="tiny",priority="2"} 3.0' in text
    assert 'cato_slack_violations_total{model="tiny",task_type="generation"} 3.0' in text
    assert 'cato_queue_length{model="tiny",replica="tiny-1"} 0.0' in text
    assert 'cato_replicas{model="tiny",state="ready"} 2.0' in text
    assert 'cato_in_flight{model="tiny"} 0.0' in text


def test_http_500_is_retried_on_the_other_replica():
    with fakes("error500", "ok") as reps, gateway([u for u, _ in reps]) as (url, _), httpx.Client(base_url=url) as c:
        for _ in range(4):
            r = c.post("/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "60000"})
            assert r.status_code == 200 and r.headers["x-cato-replica"] == "tiny-2"
        nodes = c.get("/v1/cato/nodes").json()["nodes"]
        metrics = c.get("/metrics").text
    # A retry takes a round-robin turn too, so every call meets the failing replica first.
    assert [n["attempts"] for n in nodes] == [["tiny-1", "tiny-2"]] * 4
    assert 'cato_retries_total{model="tiny"} 4.0' in metrics
    assert len(reps[0][1]) == 4 and len(reps[1][1]) == 4


def test_http_500_past_the_deadline_is_a_502():
    with fakes("error500", "ok") as reps, gateway([u for u, _ in reps]) as (url, _):
        r = httpx.post(url + "/v1/completions", json=completion(), headers={"X-CATO-Deadline-Ms": "-1"})
    status, kind, message = error_of(r)
    assert (status, kind) == (502, "upstream_error")
    assert message.startswith("replica tiny-1 answered HTTP 500: ") and "not retried: its deadline passed" in message


def test_silent_replica_times_out_and_the_call_moves_on():
    with fakes("hang", "ok") as reps, gateway([u for u, _ in reps], model={"first_byte_timeout_s": 0.5}) as (url, _):
        t0 = time.monotonic()
        r = httpx.post(url + "/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "60000"})
        took = time.monotonic() - t0
        assert r.status_code == 200 and r.headers["x-cato-replica"] == "tiny-2"
        assert 0.5 <= took < 2.0
        late = httpx.post(url + "/v1/completions", json=completion(), headers={"X-CATO-Deadline-Ms": "100"})
    status, kind, message = error_of(late)
    assert (status, kind) == (504, "timeout_error")
    assert message.startswith("replica tiny-1 was silent past its timeout (SocketTimeoutError")


def test_refused_replica_is_taken_out_and_calls_go_to_the_other():
    with fakes("ok") as alive, ExitStack() as stack:
        seen: list = []
        dying = stack.enter_context(serve_in_thread(fake_vllm(seen=seen), log_level="critical"))
        with gateway([dying, alive[0][0]]) as (url, _):
            stack.close()  # the first replica goes away
            with httpx.Client(base_url=url) as c:
                got = [
                    c.post("/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "60000"}) for _ in range(4)
                ]
                rows = {row["replica_id"]: row for row in c.get("/v1/cato/replicas").json()["replicas"]}
                nodes = c.get("/v1/cato/nodes").json()["nodes"]
    assert [r.status_code for r in got] == [200] * 4
    assert {r.headers["x-cato-replica"] for r in got} == {"tiny-2"}
    assert rows["tiny-1"]["state"] == "failed" and rows["tiny-1"]["released_s"] is not None
    assert rows["tiny-1"]["error"].startswith("replica tiny-1 refused the connection")
    assert nodes[0]["attempts"] == ["tiny-1", "tiny-2"]
    assert [n["attempts"] for n in nodes[1:]] == [["tiny-2"]] * 3


def test_only_replica_dead_is_a_503():
    with ExitStack() as stack:
        dying = stack.enter_context(serve_in_thread(fake_vllm(), log_level="critical"))
        with gateway([dying]) as (url, _):
            stack.close()
            first = httpx.post(url + "/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "60000"})
            second = httpx.post(url + "/v1/completions", json=completion())
            health = httpx.get(url + "/health")
    assert error_of(first)[:2] == (502, "upstream_error")
    assert "no other replica of 'tiny' to retry on" in error_of(first)[2]
    assert error_of(second) == (503, "unavailable_error", "no replica of model 'tiny' is ready or starting")
    assert health.status_code == 503 and health.json()["models"] == {"tiny": {"ready": 0, "starting": 0}}


class RawReplica:
    """A keep-alive HTTP/1.1 replica on raw asyncio sockets that can close a connection after
    reading a request, unanswered, as a replica closing an idle connection does at that
    moment. Counts its connections and notes which one each completion came on."""

    def __init__(self, drop_posts: int = 0):
        self.drop_posts, self.connections, self.post_connections = drop_posts, 0, []
        self._writers: set[asyncio.StreamWriter] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                if head.startswith(b"POST"):
                    self.post_connections.append(conn)
                    if len(self.post_connections) <= self.drop_posts:
                        return
                    n = json.loads(body)["max_tokens"]
                    payload = {
                        "choices": [{"index": 0, "text": "t " * n}],
                        "usage": {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n},
                    }
                else:
                    payload = {"object": "list", "data": [{"id": SERVED, "object": "model"}]}
                data = json.dumps(payload).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(data), data)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _close(self, server: asyncio.Server) -> None:
        server.close()
        for w in list(self._writers):
            w.close()
        await asyncio.sleep(0)  # let the connection handlers see the close

    @contextmanager
    def running(self):
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            asyncio.run_coroutine_threadsafe(self._close(server), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def test_a_connection_closed_before_any_answer_is_sent_again_once():
    """The replica closes the connection on the first completion: the gateway sends it once
    more on a new connection, within the same attempt, and the replica stays in routing."""
    raw = RawReplica(drop_posts=1)
    with raw.running() as replica, gateway([replica]) as (url, _):
        r = httpx.post(url + "/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "60000"})
        nodes = httpx.get(url + "/v1/cato/nodes").json()["nodes"]
        rows = httpx.get(url + "/v1/cato/replicas").json()["replicas"]
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    assert len(raw.post_connections) == 2 and raw.post_connections[0] != raw.post_connections[1]
    assert nodes[0]["attempts"] == ["tiny-1"] and rows[0]["state"] == "ready"


def test_a_replica_closing_every_connection_fails_the_call_after_two_sends():
    raw = RawReplica(drop_posts=10)
    with raw.running() as replica, gateway([replica]) as (url, _):
        r = httpx.post(url + "/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "60000"})
    status, kind, message = error_of(r)
    assert (status, kind) == (502, "upstream_error") and len(raw.post_connections) == 2
    assert message.startswith("replica tiny-1 failed the call (ServerDisconnectedError")


def test_a_call_on_its_way_to_a_replica_taken_out_fails_its_attempt_not_the_gateway():
    """Calls in flight on a replica that died: the first to find it dead takes it out of
    routing, which closes its HTTP session; the others must fail their attempt (and be
    retried elsewhere), not raise out of the gateway as a 500."""
    from cato_core.profile import DeviceProfile
    from cato_core.replica import ReplicaState
    from cato_live.gateway.forward import _attempt, _AttemptFailed
    from cato_live.gateway.live_pool import Call, LiveReplica
    from cato_live.gateway.replica_client import replica_session
    from cato_live.provisioners.base import ReplicaHandle

    d = parse_deploy(deploy_tree(["http://127.0.0.1:9"]), "test.yaml")

    async def go():
        rep = LiveReplica(ReplicaState("tiny-1", "tiny", DeviceProfile(**ROUND), 4))
        rep.handle = ReplicaHandle("tiny-1", "tiny", SERVED, "http://127.0.0.1:9")
        rep.client = replica_session(d.models["tiny"])
        rep.failed = "replica tiny-1 refused the connection (ClientConnectorError)"
        await rep.client.close()
        call = Call(None, {}, "/v1/completions", False, None, give_up_s=10.0)
        with pytest.raises(_AttemptFailed) as info:
            await _attempt(rep, call, b"{}", 5.0)
        return info.value

    e = asyncio.run(go())
    assert (e.reason, e.timeout, e.dead) == (
        "replica tiny-1 was taken out of routing (replica tiny-1 refused the connection (ClientConnectorError))",
        False,
        False,
    )


@pytest.mark.parametrize("keepalive_s, connections", [(60.0, [1, 1, 1]), (0.2, [1, 1, 2])])
def test_idle_connections_are_not_reused_past_keepalive(keepalive_s, connections):
    """Two calls back to back share a connection; after 0.4 s idle, a third gets a new one
    only when the keep-alive limit is below 0.4 s. (The replica's connection numbers count
    the provisioner's readiness check too: the calls' first is whichever came next.)"""
    raw = RawReplica()
    with raw.running() as replica, gateway([replica], model={"keepalive_s": keepalive_s}) as (url, _):
        for pause in (0.0, 0.0, 0.4):
            time.sleep(pause)
            assert httpx.post(url + "/v1/completions", json=completion()).status_code == 200
    first = raw.post_connections[0]
    assert [c - first + 1 for c in raw.post_connections] == connections


def test_stream_broken_after_bytes_ends_with_an_error_event():
    body = completion(8, 6, stream=True)
    with fakes("midstream") as reps, gateway([reps[0][0]]) as (url, _):
        r = httpx.post(url + "/v1/completions", json=body)
        nodes = httpx.get(url + "/v1/cato/nodes").json()["nodes"]
    events = read_sse(r.text)
    assert r.status_code == 200
    assert [e["choices"][0]["text"] for e in events[:2]] == ["t0 ", "t1 "]
    assert events[2]["error"]["type"] == "upstream_error" and events[2]["error"]["code"] == 502
    assert events[2]["error"]["message"].startswith("replica tiny-1 failed mid-stream (ClientPayloadError")
    assert events[3] == "[DONE]" and len(events) == 4
    assert nodes[0]["status"] == "failed"


def test_pow2_holds_calls_when_replicas_are_full_and_answers_all():
    with (
        fakes("ok", "ok") as reps,
        gateway([u for u, _ in reps], router="pow2", router_params={"max_ongoing_requests": 1}) as (url, _),
    ):

        async def burst():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                return await asyncio.gather(
                    *(c.post("/v1/completions", json=completion(8, 20, stream=True)) for _ in range(8))
                )

        got = asyncio.run(burst())
    assert [r.status_code for r in got] == [200] * 8
    assert all(read_sse(r.text)[-1] == "[DONE]" for r in got)
    assert len(reps[0][1]) + len(reps[1][1]) == 8


def test_task_graphs_run_tools_as_sleeps_and_llm_nodes_routed():
    with fakes("ok") as reps, gateway([reps[0][0]]) as (url, _), httpx.Client(base_url=url) as c:
        tr = c.post(
            "/v1/tasks",
            json={
                "task": "translation",
                "prompt_token_ids": list(range(20)),
                "max_tokens": 5,
                "sla_ms": 60000,
                "task_id": "tr-1",
            },
        ).json()
        co = c.post(
            "/v1/tasks",
            json={"task": "completion", "prompt": "def f(x):", "max_tokens": 3, "sampling": {"temperature": 0}},
        ).json()
    assert tr["status"] == "ok" and tr["task_id"] == "tr-1" and tr["sla_s"] == 60.0 and tr["met"] is True
    assert [(n["node"], n["kind"]) for n in tr["nodes"]] == [("llm", "llm"), ("validate", "tool")]
    llm, validate = tr["nodes"]
    assert llm["end_s"] <= validate["start_s"] and validate["end_s"] - validate["start_s"] >= 0.1 - TIMER
    assert tr["usage"]["completion_tokens"] == 5 and tr["text"] == "t0 t1 t2 t3 t4 "  # the last LLM node's
    assert tr["e2e_s"] == pytest.approx(validate["end_s"] - tr["arrival_s"])
    assert [(n["node"], n["kind"]) for n in co["nodes"]] == [("retrieve", "tool"), ("llm", "llm")]
    retrieve, llm = co["nodes"]
    assert retrieve["end_s"] - retrieve["start_s"] >= 0.05 - TIMER and retrieve["end_s"] <= llm["queued_s"]
    assert co["usage"]["completion_tokens"] == 3 and co["text"] == "t0 t1 t2 "
    assert co["ttft_s"] == pytest.approx(llm["first_token_s"] - co["arrival_s"])
    assert co["metric"] == "ttft" and co["met"] == (co["ttft_s"] <= co["sla_s"])
    # The llm node's deadline is arrival + its share of the SLA after retrieve's budget.
    assert llm["deadline_s"] == pytest.approx(co["arrival_s"] + co["sla_s"])
    sent = reps[0][1][-1]
    assert sent["temperature"] == 0 and sent["stream"] is True and sent["priority"] in (0, 1, 2)


def test_scaler_adds_a_replica_on_violations():
    async def violating_burst(url):
        async with httpx.AsyncClient(base_url=url) as ac:
            await asyncio.gather(
                *(ac.post("/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "0.001"}) for _ in range(4))
            )

    with (
        fakes("ok", "ok") as reps,
        gateway(
            [u for u, _ in reps],
            router="cato",
            scaler="cato",
            scaler_params={"window_s": 0.2, "max_exceeded_times": 1, "scale_per_violation": 1.0},
            model={"replicas": 1},
        ) as (url, _),
    ):
        end = time.monotonic() + 5
        rows: list = []
        while time.monotonic() < end and not (len(rows) == 2 and rows[1]["state"] == "ready"):
            if len(rows) < 2:
                asyncio.run(violating_burst(url))
            time.sleep(0.1)
            rows = httpx.get(url + "/v1/cato/replicas").json()["replicas"]
    assert [(r["replica_id"], r["state"]) for r in rows] == [("tiny-1", "ready"), ("tiny-2", "ready")]
    assert rows[0]["ready_s"] < rows[1]["asked_s"] <= rows[1]["ready_s"]


def test_scaler_releases_an_idle_replica_after_draining_it():
    with (
        fakes("ok", "ok") as reps,
        gateway(
            [u for u, _ in reps],
            scaler="cato",
            scaler_params={"window_s": 0.1, "idle_timeout_s": 0.3, "min_replicas": 1},
        ) as (url, gw),
    ):
        assert httpx.post(url + "/v1/completions", json=completion()).status_code == 200
        end = time.monotonic() + 5
        while time.monotonic() < end and len(gw.fleet.pools["tiny"].replicas) == 2:
            time.sleep(0.05)
        rows = {r["replica_id"]: r for r in httpx.get(url + "/v1/cato/replicas").json()["replicas"]}
        after = httpx.post(url + "/v1/completions", json=completion())
        free = gw.fleet.provisioner.capacity("tiny")
    released = [r for r in rows.values() if r["state"] == "released"]
    assert len(released) == 1 and released[0]["released_s"] - released[0]["ready_s"] >= 0.3 - TIMER
    kept = next(k for k, r in rows.items() if r["state"] == "ready")
    assert after.status_code == 200 and after.headers["x-cato-replica"] == kept
    assert free == 1  # the released URL is free again


def test_a_replica_that_never_serves_fails_startup_with_one_line():
    from cato_live.gateway.app import Gateway
    from cato_live.gateway.fleet import StartupError
    from cato_live.provisioners.registry import make_provisioner

    d = parse_deploy(deploy_tree(["http://127.0.0.1:9"]), "test.yaml")
    d.provisioner.ready_timeout_s = 0.5
    gw = Gateway(d, make_provisioner(d))

    async def start():
        try:
            await gw.start()
        finally:
            await gw.close()

    with pytest.raises(StartupError) as e:
        asyncio.run(start())
    assert str(e.value) == (
        "replica tiny-1 did not start: TimeoutError: http://127.0.0.1:9 does not serve "
        "'cato-tiny' after 0.5 s (ConnectError)"
    )
    assert gw.fleet.rows()[0]["state"] == "failed"


def test_a_retry_with_nowhere_to_go_fails_at_once_even_with_a_scaler():
    with fakes("error500") as reps, gateway([reps[0][0]], scaler="cato") as (url, _):
        t0 = time.monotonic()
        r = httpx.post(url + "/v1/completions", json=completion(), headers={"X-CATO-SLA-Ms": "60000"})
        took = time.monotonic() - t0
    status, kind, message = error_of(r)
    assert (status, kind) == (502, "upstream_error") and took < 1.0  # not the 5 s request timeout
    assert message == (
        "replica tiny-1 answered HTTP 500: "
        '{"error":{"message":"engine dead","type":"InternalServerError"}}; '
        "no other replica of 'tiny' to retry on"
    )
