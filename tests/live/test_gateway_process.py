"""`cato-live serve` end to end with the process provisioner and real vLLM: the CATO scaler adds
a replica on violations, a replica killed mid-run loses no call, and Ctrl-C stops everything.
Then SIGTERM and SIGINT each to a gateway of its own: every process it started is gone when
it exits.

One gateway process for the first tests; at most two vLLM servers at a time (one per core).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from cato_live.provisioners.vllm_process import free_port
from tests.test_gateway_unit import read_sse

from .conftest import ROOT, SERVED_NAME
from .processes import descendants, gone
from .test_gateway import TINY_CPU

pytestmark = pytest.mark.live

PROMPT = 32


def body(max_tokens: int, **extra) -> dict:
    return {
        "model": "tiny",
        "prompt": list(range(10, 10 + PROMPT)),
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        **extra,
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class Cli:
    """The gateway as a child process, with its log."""

    def __init__(self, deploy_path, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(log_path, "wb") as log:  # the child keeps its own copy of the handle
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cato_live.cli", "serve", str(deploy_path), "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def rows(self) -> dict[str, dict]:
        return {r["replica_id"]: r for r in httpx.get(self.url + "/v1/cato/replicas", timeout=10).json()["replicas"]}

    def wait(self, what, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"cato-live serve exited with {self.proc.returncode}:\n{self.log()}", pytrace=False)
            try:
                got = what()
                if got:
                    return got
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        pytest.fail(f"timed out after {timeout:g} s waiting for the gateway:\n{self.log()}", pytrace=False)


@pytest.fixture(scope="module")
def cli(vllm_python, tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    deploy = {
        "router": "cato",
        "scaler": "cato",
        "scaler_params": {
            "window_s": 0.5,
            "max_exceeded_times": 1,
            "scale_per_violation": 1.0,
            "idle_timeout_s": 600,
            "min_replicas": 1,
            "max_replicas": 2,
        },
        "default_task_type": "generation",
        "models": {
            "tiny": {
                "profile": TINY_CPU,
                "served_model": SERVED_NAME,
                "replicas": 1,
                "max_num_seqs": 8,
                "priority_scheduling": True,
                "request_timeout_s": 60,
                "first_byte_timeout_s": 10,
            }
        },
        "provisioner": {
            "kind": "process",
            "python": vllm_python,
            "device": "cpu",
            "devices": [0, 1],
            "log_dir": str(tmp / "vllm"),
            "ready_timeout_s": float(os.environ.get("CATO_VLLM_READY_TIMEOUT", "180")),
            "models": {"tiny": {"path": tiny_model_dir}},
        },
    }
    (tmp / "deploy.yaml").write_text(yaml.safe_dump(deploy))
    c = Cli(tmp / "deploy.yaml", tmp / "gateway.log")
    pids: list[int] = []
    c.pids = pids
    try:
        c.wait(lambda: httpx.get(c.url + "/health", timeout=5).status_code == 200, 240)
        yield c
    finally:
        if c.proc.poll() is None:
            c.proc.send_signal(signal.SIGINT)
            try:
                c.proc.wait(60)
            except subprocess.TimeoutExpired:
                c.proc.kill()
        for pid in pids:  # never leave a vLLM behind, whatever failed
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_serve_starts_the_initial_replica_pinned(cli):
    rows = cli.rows()
    assert list(rows) == ["tiny-1"]
    r = rows["tiny-1"]
    cli.pids.append(r["meta"]["pid"])
    assert r["state"] == "ready" and r["meta"]["devices"] == [0] and alive(r["meta"]["pid"])
    assert 0 <= r["asked_s"] < r["ready_s"] and r["released_s"] is None
    # the CPU build's device is its core: the server and all it started run on core 0 only
    server = r["meta"]["pid"]
    for pid in [server, *descendants(server)]:
        assert os.sched_getaffinity(pid) == {0}, pid
    warm = httpx.post(cli.url + "/v1/completions", json=body(4), timeout=60)
    assert warm.status_code == 200 and warm.json()["usage"]["completion_tokens"] == 4


def test_cato_scaler_adds_a_replica_on_violations(cli):
    async def violating_burst():
        async with httpx.AsyncClient(base_url=cli.url, timeout=60) as c:
            got = await asyncio.gather(
                *(c.post("/v1/completions", json=body(8), headers={"X-CATO-SLA-Ms": "0.001"}) for _ in range(4))
            )
        assert [r.headers["x-cato-priority"] for r in got] == ["0"] * 4  # violated at routing

    def asked():
        asyncio.run(violating_burst())
        return len(cli.rows()) == 2

    cli.wait(asked, 20)
    rows = cli.wait(lambda: (r := cli.rows())["tiny-2"]["state"] == "ready" and r, 240)
    one, two = rows["tiny-1"], rows["tiny-2"]
    cli.pids.append(two["meta"]["pid"])
    assert two["meta"]["devices"] == [1] and alive(two["meta"]["pid"])
    assert two["asked_s"] > one["ready_s"]
    assert two["ready_s"] - two["asked_s"] > 2.0  # a real cold start, counted from the ask
    warm = httpx.post(cli.url + "/v1/completions", json=body(4), timeout=60)
    assert warm.status_code == 200
    metrics = httpx.get(cli.url + "/metrics").text
    assert 'cato_replicas{model="tiny",state="ready"} 2.0' in metrics


def test_replica_killed_mid_run_loses_no_call(cli):
    rows = cli.rows()
    assert [rows[k]["state"] for k in ("tiny-1", "tiny-2")] == ["ready", "ready"]
    victim = rows["tiny-1"]["meta"]["pid"]
    # Long enough that no call can end between the gateway showing it under way and the kill.
    n_tokens = 1000

    async def under_way(c: httpx.AsyncClient) -> bool:
        """All 12 calls routed, some sent to tiny-1, and none of those ended."""
        ours = [n for n in (await c.get("/v1/cato/nodes")).json()["nodes"] if n["task_id"].startswith("k")]
        on_1 = [n for n in ours if n["replica"] == "tiny-1"]
        return (
            len(ours) == 12
            and all(n["queued_s"] is not None for n in ours)
            and any(n["start_s"] is not None for n in on_1)
            and all(n["status"] == "running" for n in on_1)
        )

    async def run():
        async with httpx.AsyncClient(base_url=cli.url, timeout=120) as c:
            plain = [
                c.post(
                    "/v1/completions",
                    json=body(n_tokens),
                    headers={"X-CATO-SLA-Ms": "60000", "X-CATO-Task-Id": f"k{i}"},
                )
                for i in range(8)
            ]
            streamed = [
                c.post(
                    "/v1/completions",
                    headers={"X-CATO-SLA-Ms": "60000", "X-CATO-Task-Id": f"k{i}"},
                    json=body(n_tokens, stream=True, stream_options={"include_usage": True}),
                )
                for i in range(8, 12)
            ]
            calls = [asyncio.ensure_future(x) for x in plain + streamed]
            for _ in range(200):
                await asyncio.sleep(0.02)
                if await under_way(c):
                    break
            else:
                pytest.fail("the 12 calls never were all under way")
            os.killpg(victim, signal.SIGKILL)  # the engine and its API server, mid-generation
            return await asyncio.gather(*calls)

    got = asyncio.run(run())
    assert len(got) == 12
    plain, streamed = got[:8], got[8:]
    # Nothing had reached the client of a non-streamed call: each was retried on tiny-2.
    assert [r.status_code for r in plain] == [200] * 8
    assert all(r.json()["usage"]["completion_tokens"] == n_tokens for r in plain)
    for r in streamed:
        events = read_sse(r.text)
        assert r.status_code == 200 and events[-1] == "[DONE]"
        if "error" in events[-2]:  # it had begun streaming on tiny-1: a clear error event ends it
            assert r.headers["x-cato-replica"] == "tiny-1"
            assert events[-2]["error"]["message"].startswith("replica tiny-1 failed mid-stream")
        else:
            assert events[-2]["usage"]["completion_tokens"] == n_tokens
    nodes = {n["task_id"]: n for n in httpx.get(cli.url + "/v1/cato/nodes").json()["nodes"]}
    hit = [nodes[f"k{i}"] for i in range(12) if nodes[f"k{i}"]["attempts"][0] == "tiny-1"]
    assert hit, "the kill hit no call"
    for i in range(12):
        n = nodes[f"k{i}"]
        if n["attempts"][0] == "tiny-2":
            assert (n["attempts"], n["status"]) == (["tiny-2"], "ok")
        elif n["status"] == "failed":  # a stream already under way: ended with an error event
            assert i >= 8 and n["attempts"] == ["tiny-1"]
        else:
            assert (n["attempts"], n["status"]) == (["tiny-1", "tiny-2"], "ok")
    # The next call routed to tiny-1 is refused: tiny-1 leaves routing and the call moves on.
    for _ in range(10):
        r = httpx.post(cli.url + "/v1/completions", json=body(4), headers={"X-CATO-SLA-Ms": "60000"}, timeout=60)
        assert r.status_code == 200 and r.headers["x-cato-replica"] == "tiny-2"
        if cli.rows()["tiny-1"]["state"] == "failed":
            break
    rows = cli.rows()
    assert rows["tiny-1"]["state"] == "failed" and rows["tiny-1"]["released_s"] is not None
    assert rows["tiny-1"]["error"].startswith("replica tiny-1 refused the connection")
    cli.wait(lambda: not alive(victim), 20)  # reaped by the provisioner


def test_ctrl_c_stops_the_gateway_and_every_replica(cli):
    pids = [r["meta"]["pid"] for r in cli.rows().values()]
    cli.proc.send_signal(signal.SIGINT)
    assert cli.proc.wait(60) == 0, cli.log()
    assert not any(alive(p) for p in pids), cli.log()
    assert "Traceback" not in cli.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_every_replica_the_gateway_started(sig, vllm_python, tiny_model_dir, tmp_path):
    """experiments/deploy/process_cpu.yaml with one replica: after the signal, the gateway exits
    0 and each process it had started (vLLM's API server, its engine core, ...) is gone."""
    deploy = yaml.safe_load((ROOT / "experiments/deploy/process_cpu.yaml").read_text())
    deploy["models"]["tiny"]["replicas"] = 1
    deploy["provisioner"].update(
        python=vllm_python,
        devices=[0],
        log_dir=str(tmp_path / "vllm"),
        ready_timeout_s=float(os.environ.get("CATO_VLLM_READY_TIMEOUT", "180")),
    )
    deploy["provisioner"]["models"]["tiny"]["path"] = tiny_model_dir
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(deploy))
    c = Cli(tmp_path / "deploy.yaml", tmp_path / "gateway.log")
    started: dict[int, int] = {}
    try:
        c.wait(lambda: httpx.get(c.url + "/health", timeout=5).status_code == 200, 240)
        (row,) = c.rows().values()
        server = row["meta"]["pid"]
        started = descendants(c.proc.pid)
        assert server in started, (server, started)
        group = [pid for pid in started if os.getpgid(pid) == server]
        assert len(group) >= 2, group  # the API server and its engine core, in one process group
        c.proc.send_signal(sig)
        assert c.proc.wait(60) == 0, c.log()
        assert {pid: gone(pid, start) for pid, start in started.items()} == dict.fromkeys(started, True), c.log()
        assert "Traceback" not in c.log()
    finally:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()
        for pid, start in started.items():  # never leave a vLLM behind, whatever failed
            if not gone(pid, start):
                os.kill(pid, signal.SIGKILL)
