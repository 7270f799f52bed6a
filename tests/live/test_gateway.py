"""The gateway in front of two real vLLM replicas (CPU build, tiny model), for every router.

The two servers are started once for the module by the ``process`` provisioner (one per
core) and shared: each test puts a gateway (``static`` provisioner over their URLs, in a
thread) in front of them, and the failure tests add a stand-in replica beside a real one.
Skipped unless CATO_VLLM_PYTHON and CATO_TINY_MODEL are set (see conftest.py).
"""

from __future__ import annotations

import asyncio
import os
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from cato_live.background import serve_in_thread
from cato_live.deploy import parse_deploy
from cato_live.gateway.app import create_app
from cato_live.provisioners.process import ProcessProvisioner
from tests.test_gateway_unit import fake_vllm, read_sse

from .conftest import SERVED_NAME, post_json

pytestmark = pytest.mark.live

PROMPT, OUTPUT = 32, 16
TASK_TYPES = ("completion", "generation", "summarization", "translation")
TINY_CPU = {
    "name": "tiny-cpu",
    "model": SERVED_NAME,
    "device": "x86 core",
    "overhead_s": 0.003,
    "per_token_s": 0.0001,
    "prefill_attn_s": 0.0,
    "decode_ctx_s": 0.0,
    "kv_capacity_tokens": 100000,
    "cold_start_s": 30.0,
}


def deploy_tree(provisioner: dict, **over) -> dict:
    model = {
        "profile": TINY_CPU,
        "served_model": SERVED_NAME,
        "max_num_seqs": 8,
        "priority_scheduling": True,
        "request_timeout_s": 60.0,
        "first_byte_timeout_s": 10.0,
    }
    model.update(over.pop("model", {}))
    tree = {
        "router": "cato",
        "default_task_type": "generation",
        "models": {"tiny": model},
        "tools": {"retrieve": 0.02, "validate": 0.05},
        "provisioner": provisioner,
    }
    tree.update(over)
    return tree


@pytest.fixture(scope="module")
def replicas(vllm_python, tiny_model_dir, tmp_path_factory):
    """(provisioner, handles): two real vLLM servers, pinned to cores 0 and 1."""
    log_dir = tmp_path_factory.mktemp("vllm-pair")
    deploy = parse_deploy(
        deploy_tree(
            {
                "kind": "process",
                "python": vllm_python,
                "device": "cpu",
                "devices": [0, 1],
                "log_dir": str(log_dir),
                "ready_timeout_s": float(os.environ.get("CATO_VLLM_READY_TIMEOUT", "180")),
                "models": {"tiny": {"path": tiny_model_dir}},
            },
            model={"replicas": 2},
        ),
        "live",
    )
    prov = ProcessProvisioner(deploy)

    async def start_both():
        return await asyncio.gather(prov.start("tiny", "tiny-1"), prov.start("tiny", "tiny-2"))

    try:
        handles = asyncio.run(start_both())
        for h in handles:  # the first request after start-up is slow
            post_json(h.base_url + "/v1/completions", body(4))
        yield prov, handles
    finally:
        asyncio.run(prov.close())


@contextmanager
def gateway(urls: list[str], **over):
    """A gateway over ``urls`` (static provisioner) served in a thread; yields its URL."""
    app = create_app(
        parse_deploy(
            deploy_tree(
                {"kind": "static", "models": {"tiny": urls}},
                model={"replicas": len(urls), **over.pop("model", {})},
                **over,
            ),
            "live",
        )
    )
    with serve_in_thread(app) as url:
        yield url


def body(max_tokens: int = OUTPUT, model: str = SERVED_NAME, **extra) -> dict:
    return {
        "model": model,
        "prompt": list(range(10, 10 + PROMPT)),
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        **extra,
    }


async def send_all(url: str, calls: list[tuple[dict, dict]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        return await asyncio.gather(*(c.post("/v1/completions", json=b, headers=h) for b, h in calls))


def usage_of(r: httpx.Response) -> dict:
    if r.headers["content-type"].startswith("text/event-stream"):
        events = read_sse(r.text)
        assert events[-1] == "[DONE]", r.text[-300:]
        return events[-2]["usage"]
    return r.json()["usage"]


def get(url: str, path: str) -> dict:
    return httpx.get(url + path, timeout=30).json()


def test_process_provisioner_pins_each_server_to_its_core(replicas):
    _, handles = replicas
    assert [h.meta["devices"] for h in handles] == [[0], [1]]
    for h, core in zip(handles, ("0", "1"), strict=True):
        with open(f"/proc/{h.meta['pid']}/environ", "rb") as fh:
            env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
        assert env[b"VLLM_CPU_OMP_THREADS_BIND"] == core.encode()
        with open(f"/proc/{h.meta['pid']}/cmdline", "rb") as fh:
            cmd = fh.read().split(b"\0")
        assert cmd[cmd.index(b"--scheduling-policy") + 1] == b"priority"
        assert cmd[cmd.index(b"--max-num-seqs") + 1] == b"8"


@pytest.mark.parametrize("router", ["cato", "pow2", "round_robin"])
def test_every_task_type_streamed_and_not_for_each_router(replicas, router):
    _, handles = replicas
    calls = [
        (
            body(stream=stream, stream_options={"include_usage": True}) if stream else body(),
            {"X-CATO-Task": task, "X-CATO-Task-Id": f"{task}-{stream}-{i}"},
        )
        for task in TASK_TYPES
        for stream in (False, True)
        for i in range(2)
    ]
    with gateway([h.base_url for h in handles], router=router) as url:
        got = asyncio.run(send_all(url, [({**b, "model": "tiny"}, h) for b, h in calls]))
        rows = {r["replica_id"]: r for r in get(url, "/v1/cato/replicas")["replicas"]}
        nodes = {n["task_id"]: n for n in get(url, "/v1/cato/nodes")["nodes"]}
    assert [r.status_code for r in got] == [200] * len(calls)
    for r, (_, h) in zip(got, calls, strict=True):
        assert usage_of(r)["prompt_tokens"] == PROMPT and usage_of(r)["completion_tokens"] == OUTPUT
        n = nodes[h["X-CATO-Task-Id"]]
        assert n["status"] == "ok" and n["task_type"] == h["X-CATO-Task"]
        assert r.headers["x-cato-replica"] == n["replica"] and n["attempts"] == [n["replica"]]
        assert int(r.headers["x-cato-priority"]) == n["priority"] == n["sent_priority"]  # what vLLM got
        assert n["priority"] in ((0, 1, 2) if router == "cato" else (2,))
    # The router's choices, as the replicas table counts them.
    per_replica = {k: sum(n["replica"] == k for n in nodes.values()) for k in rows}
    assert {k: v["requests"] for k, v in rows.items()} == per_replica
    assert sum(per_replica.values()) == len(calls)
    if router == "round_robin":
        order = [n["replica"] for n in sorted(nodes.values(), key=lambda n: n["queued_s"])]
        assert order == ["tiny-1", "tiny-2"] * (len(calls) // 2)


def test_cato_priority_follows_the_deadline_and_reaches_vllm(replicas):
    _, handles = replicas
    with gateway([h.base_url for h in handles]) as url:
        late = httpx.post(
            url + "/v1/completions",
            json=body(model="tiny"),
            headers={"X-CATO-Deadline-Ms": "-5", "X-CATO-Task-Id": "late"},
            timeout=60,
        )
        easy = httpx.post(
            url + "/v1/completions",
            json=body(model="tiny"),
            headers={"X-CATO-SLA-Ms": "60000", "X-CATO-Task-Id": "easy"},
            timeout=60,
        )
        nodes = {n["task_id"]: n for n in get(url, "/v1/cato/nodes")["nodes"]}
    assert late.status_code == easy.status_code == 200
    assert (late.headers["x-cato-priority"], nodes["late"]["sent_priority"]) == ("0", 0)  # violated
    assert (easy.headers["x-cato-priority"], nodes["easy"]["sent_priority"]) == ("2", 2)  # on time
    assert nodes["late"]["slack_s"] < 0 < nodes["easy"]["slack_s"]


def test_chat_completion_streams_through(replicas):
    _, handles = replicas
    with gateway([h.base_url for h in handles]) as url:
        r = httpx.post(
            url + "/v1/chat/completions",
            timeout=60,
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "def add(a, b):"}],
                "max_tokens": 6,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    assert r.status_code == 200 and usage_of(r)["completion_tokens"] == 6
    assert read_sse(r.text)[0]["object"] == "chat.completion.chunk"


@pytest.mark.parametrize(
    "task, nodes",
    [
        ("completion", [("retrieve", "tool"), ("llm", "llm")]),
        ("generation", [("llm", "llm")]),
        ("summarization", [("llm", "llm")]),
        ("translation", [("llm", "llm"), ("validate", "tool")]),
    ],
)
def test_tasks_endpoint_runs_each_graph(replicas, task, nodes):
    _, handles = replicas
    with gateway([h.base_url for h in handles]) as url:
        r = httpx.post(
            url + "/v1/tasks",
            timeout=60,
            json={
                "task": task,
                "prompt_token_ids": list(range(10, 10 + PROMPT)),
                "max_tokens": 8,
                "sla_ms": 30000,
                "sampling": {"ignore_eos": True},
            },
        )
    t = r.json()
    assert r.status_code == 200 and t["status"] == "ok" and t["met"] is True and t["sla_s"] == 30.0
    assert [(n["node"], n["kind"]) for n in t["nodes"]] == nodes
    assert t["usage"] == {"prompt_tokens": PROMPT, "completion_tokens": 8, "total_tokens": PROMPT + 8}
    llm = next(n for n in t["nodes"] if n["kind"] == "llm")
    assert llm["replica"] in ("tiny-1", "tiny-2") and llm["sent_priority"] == llm["priority"] == 2
    assert llm["queued_s"] <= llm["start_s"] < llm["first_token_s"] <= llm["end_s"]
    assert 0 < t["ttft_s"] <= t["e2e_s"]
    assert t["e2e_s"] == pytest.approx(max(n["end_s"] for n in t["nodes"]) - t["arrival_s"])


def test_metrics_after_real_calls(replicas):
    _, handles = replicas
    with gateway([h.base_url for h in handles], router="round_robin") as url:
        asyncio.run(send_all(url, [(body(model="tiny"), {}) for _ in range(6)]))
        text = httpx.get(url + "/metrics").text
    assert 'cato_requests_routed_total{model="tiny",priority="2"} 6.0' in text
    assert 'cato_queue_length{model="tiny",replica="tiny-1"} 0.0' in text
    assert 'cato_queue_length{model="tiny",replica="tiny-2"} 0.0' in text
    assert 'cato_replicas{model="tiny",state="ready"} 2.0' in text
    assert 'cato_in_flight{model="tiny"} 0.0' in text
    assert "cato_slack_violations_total" in text and "cato_call_failures_total" in text


def test_auth_and_bad_input_never_crash_the_gateway(replicas):
    _, handles = replicas
    with gateway([h.base_url for h in handles], token="t0ken", max_body_bytes=65536) as url:
        auth = {"Authorization": "Bearer t0ken"}
        with httpx.Client(base_url=url, timeout=60) as c:
            assert c.post("/v1/completions", json=body(model="tiny")).status_code == 401
            bad = [
                c.post("/v1/completions", content=b"{oops", headers={**auth, "content-type": "application/json"}),
                c.post("/v1/completions", json={**body(model="tiny"), "prompt": "x" * 70000}, headers=auth),
                c.post("/v1/completions", json=body(model="gpt-4"), headers=auth),
                c.post("/v1/completions", json=body(model="tiny"), headers={**auth, "X-CATO-Task": "poetry"}),
                c.post("/v1/completions", json=body(model="tiny"), headers={**auth, "X-CATO-SLA-Ms": "-3"}),
                c.post("/v1/tasks", json={"task": "generation"}, headers=auth),
            ]
            # A call vLLM itself rejects (prompt over max_model_len) comes back as vLLM said.
            too_long = c.post("/v1/completions", headers=auth, json={**body(model="tiny"), "prompt": [10] * 3000})
            ok = c.post("/v1/completions", json=body(model="tiny"), headers=auth)
    assert [r.status_code for r in bad] == [400, 413, 404, 400, 400, 400]
    assert all(set(r.json()["error"]) == {"message", "type", "code"} for r in bad)
    assert too_long.status_code == 400 and "error" in too_long.json()
    assert ok.status_code == 200 and usage_of(ok)["completion_tokens"] == OUTPUT


@pytest.mark.parametrize("mode", ["hang", "error500"])
def test_failing_replica_beside_a_real_one_loses_no_call(replicas, mode):
    _, handles = replicas
    with ExitStack() as stack:
        fake = stack.enter_context(serve_in_thread(fake_vllm(mode), log_level="critical", graceful_s=1.0))
        url = stack.enter_context(
            gateway([fake, handles[0].base_url], router="round_robin", model={"first_byte_timeout_s": 1.0})
        )
        with httpx.Client(base_url=url, timeout=60) as c:
            # One after the other: a retry takes a round-robin turn, so every call meets the
            # stand-in (tiny-1) first and is answered by the real replica (tiny-2).
            streamed = body(model="tiny", stream=True, stream_options={"include_usage": True})
            got = [
                c.post(
                    "/v1/completions",
                    json=streamed if s else body(model="tiny"),
                    headers={"X-CATO-SLA-Ms": "60000", "X-CATO-Task-Id": f"c{i}"},
                )
                for i, s in enumerate([False, True, False, True])
            ]
            # A deadline that has passed once the stand-in has failed the call: no retry.
            late = c.post(
                "/v1/completions",
                json=body(model="tiny"),
                headers={"X-CATO-Deadline-Ms": "200" if mode == "hang" else "-1", "X-CATO-Task-Id": "late"},
            )
            nodes = {n["task_id"]: n for n in c.get("/v1/cato/nodes").json()["nodes"]}
    assert [r.status_code for r in got] == [200] * 4
    assert all(r.headers["x-cato-replica"] == "tiny-2" and usage_of(r)["completion_tokens"] == OUTPUT for r in got)
    assert [nodes[f"c{i}"]["attempts"] for i in range(4)] == [["tiny-1", "tiny-2"]] * 4
    err = late.json()["error"]
    if mode == "hang":
        assert (late.status_code, err["type"]) == (504, "timeout_error")
        assert err["message"].startswith("replica tiny-1 was silent past its timeout (SocketTimeoutError")
        assert nodes["late"]["status"] == "timeout"
    else:
        assert (late.status_code, err["type"]) == (502, "upstream_error")
        assert err["message"].startswith("replica tiny-1 answered HTTP 500: ")
        assert nodes["late"]["status"] == "failed"
    assert nodes["late"]["attempts"] == ["tiny-1"]


@pytest.mark.parametrize("router", ["cato", "pow2", "round_robin"])
def test_replay_of_a_poisson_trace_through_the_gateway_for_each_router(replicas, router, tmp_path):
    """`cato-live replay` of all four task types, open loop, through the gateway over the two
    real replicas: every task once and ok, exact token counts, the gateway's replicas table."""
    from cato_traces.files import write_trace

    from .test_replay_vllm import check_complete_run, poisson_trace, run_replay

    _, handles = replicas
    trace = poisson_trace(16, rate=4.0, seed=5)
    write_trace(trace, tmp_path / "trace.parquet")
    with gateway([h.base_url for h in handles], router=router) as url:
        res = run_replay(
            tmp_path / "trace.parquet",
            "--target",
            url,
            "--model",
            "tiny",
            "--out",
            tmp_path / "out",
            "--vocab-size",
            2000,
            "--seed",
            1,
        )
    assert res.returncode == 0, res.stderr[-2000:]
    _tasks, nodes, reps, _summary = check_complete_run(trace, tmp_path / "out", url, "tiny", gateway=True)
    assert sorted(reps["replica_id"]) == ["tiny-1", "tiny-2"]
    assert reps["requests"].sum() == len(trace)
    llm = nodes[nodes["kind"] == "llm"]
    assert set(llm["replica"]) <= {"tiny-1", "tiny-2"}
    if router == "round_robin":
        assert sorted(llm["replica"].value_counts().tolist()) == [8, 8]


def test_process_provisioner_stops_its_servers(replicas):
    prov, handles = replicas
    asyncio.run(prov.close())
    for h in handles:
        with pytest.raises(ProcessLookupError):
            os.kill(h.meta["pid"], 0)
        with pytest.raises(httpx.ConnectError):
            httpx.get(h.base_url + "/v1/models", timeout=2)
    assert prov.capacity("tiny") == 2  # both cores back in the pool
