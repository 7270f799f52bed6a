"""`cato-live replay` through the gateway while one of its two replicas fails: SIGKILLed
mid-run, accepting calls but never answering, or answering HTTP 500. The replay finishes,
every task is in tasks.parquet once with a status and, where it failed, why; a call that
had not yet reached its client is retried on the real vLLM replica while its deadline
allows.

The failing replica is tiny-1, the real one (the session's vLLM server) tiny-2; round robin
sends about half the calls to tiny-1 first. Half the tasks have a 60 s SLA (a retry always
fits), the other half a deadline already gone when the first attempt fails (no retry).
Each task's expected outcome follows from the gateway's record of where it was sent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import ExitStack

import httpx
import pytest

from cato_live.background import serve_in_thread
from cato_live.provisioners.emulator import EmulatorSpec
from cato_traces.files import write_trace
from tests.test_gateway_unit import fake_vllm

from .conftest import ROOT, SERVED_NAME
from .processes import gone, stat
from .test_emulator import PROFILE, Emulators
from .test_gateway import gateway
from .test_replay_vllm import load, poisson_trace, replay_command, replay_env

pytestmark = pytest.mark.live

N = 12
GENEROUS_S, TIGHT_S = 60.0, 0.001


def trace_with_slas(seed: int):
    trace = poisson_trace(N, rate=6.0, seed=seed)
    trace["output_tokens"] = 16  # long enough on the slowed emulator for the kill to find calls under way
    trace["sla_s"] = [GENEROUS_S if i % 2 == 0 else TIGHT_S for i in range(N)]
    return trace


def replay(trace, url: str, out, on_running=None) -> subprocess.CompletedProcess:
    """Runs the replay; ``on_running(url)`` is called until it returns True while it runs."""
    write_trace(trace, out.with_suffix(".parquet"))
    cmd = [
        *replay_command(),
        str(out.with_suffix(".parquet")),
        "--target",
        url,
        "--model",
        "tiny",
        "--out",
        str(out),
        "--vocab-size",
        "2000",
        "--seed",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=replay_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while on_running is not None and proc.poll() is None and time.monotonic() < end:
            if on_running(url):
                break
            time.sleep(0.01)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def gateway_nodes(url: str) -> dict[str, dict]:
    return {n["task_id"]: n for n in httpx.get(url + "/v1/cato/nodes", timeout=10).json()["nodes"]}


def check_every_task_once(trace, out) -> tuple:
    tasks, nodes, _, summary = load(out)
    assert sorted(tasks["task_id"]) == sorted(trace["task_id"])  # exactly once each
    assert set(tasks["status"]) <= {"ok", "failed", "timeout"}
    assert tasks.loc[tasks["status"] == "ok", "error"].isna().all()
    assert summary["tasks_by_status"] == tasks["status"].value_counts().to_dict()
    return tasks.set_index("task_id"), nodes


@pytest.mark.parametrize("mode", ["error500", "hang"])
def test_replay_with_a_failing_replica_beside_a_real_one(vllm_server, mode, tmp_path):
    trace = trace_with_slas(seed=3)
    with ExitStack() as stack:
        bad = stack.enter_context(serve_in_thread(fake_vllm(mode), log_level="critical", graceful_s=1.0))
        url = stack.enter_context(
            gateway([bad, vllm_server.url], router="round_robin", model={"first_byte_timeout_s": 1.0})
        )
        res = replay(trace, url, tmp_path / "out")
        gw = gateway_nodes(url)
    assert res.returncode == 1, res.stderr[-2000:]  # some tasks failed: exit 1, tables written
    tasks, nodes = check_every_task_once(trace, tmp_path / "out")
    first_bad = [t for t in trace["task_id"] if gw[t]["attempts"][0] == "tiny-1"]
    assert first_bad and len(first_bad) < N  # round robin: both replicas were tried first
    failed_as = (
        ("failed", "node llm: HTTP 502: replica tiny-1 answered HTTP 500")
        if mode == "error500"
        else ("timeout", "node llm: HTTP 504: replica tiny-1 was silent past its timeout")
    )
    for i, t in enumerate(trace["task_id"]):
        row, rec = tasks.loc[t], gw[t]
        if rec["attempts"][0] == "tiny-2":
            assert (rec["attempts"], row["status"]) == (["tiny-2"], "ok")
        elif i % 2 == 0:  # 60 s SLA: retried on the real replica
            assert (rec["attempts"], rec["status"], row["status"]) == (["tiny-1", "tiny-2"], "ok", "ok")
        else:  # the deadline had passed: no retry, the task ends with the reason
            assert (rec["attempts"], row["status"]) == (["tiny-1"], failed_as[0])
            assert row["error"].startswith(failed_as[1]), row["error"]
    print(
        f"\n[live] {mode}: {len(first_bad)} of {N} tasks met tiny-1 first; statuses "
        f"{tasks['status'].value_counts().to_dict()}"
    )
    ok = nodes[(nodes["kind"] == "llm") & (nodes["status"] == "ok")].set_index("task_id")
    assert (ok["output_tokens"] == 16).all() and (ok["replica"] == "tiny-2").all()


@pytest.fixture
def victim(tmp_path):
    """An emulated replica (a real subprocess; its engine slowed 20x so calls last) to SIGKILL."""
    emus = Emulators(
        {"tiny": EmulatorSpec(profile=PROFILE, served_model_name=SERVED_NAME, time_scale=20.0)},
        log_dir=str(tmp_path / "emulator-logs"),
    )
    try:
        yield emus.start("tiny", "victim")
    finally:
        emus.close()


def test_replay_with_a_replica_killed_mid_run(vllm_server, victim, tmp_path):
    trace = trace_with_slas(seed=4)
    pid = victim.meta["pid"]
    start = stat(pid)[2]

    def kill_when_under_way(url: str) -> bool:
        on_1 = [n for n in gateway_nodes(url).values() if n["replica"] == "tiny-1"]
        if not any(n["status"] == "running" and n["first_token_s"] is not None for n in on_1):
            return False
        os.killpg(pid, signal.SIGKILL)  # mid-stream for some calls, queued or in prefill for others
        return True

    with gateway([victim.base_url, vllm_server.url], router="round_robin") as url:
        res = replay(trace, url, tmp_path / "out", on_running=kill_when_under_way)
        gw = gateway_nodes(url)
        rows = {r["replica_id"]: r for r in httpx.get(url + "/v1/cato/replicas").json()["replicas"]}
    assert res.returncode in (0, 1), res.stderr[-2000:]
    assert gone(pid, start)  # killed (a zombie until the emulator's owner reaps it)
    tasks, _ = check_every_task_once(trace, tmp_path / "out")
    assert rows["tiny-1"]["state"] == "failed" and rows["tiny-1"]["released_s"] is not None
    failed_at = rows["tiny-1"]["released_s"]  # when the gateway saw tiny-1 die (its clock)
    hit, outcomes = 0, []
    for i, t in enumerate(trace["task_id"]):
        row, rec = tasks.loc[t], gw[t]
        outcomes.append(f"{'+'.join(rec['attempts'])}:{row['status']}")
        if rec["attempts"][0] == "tiny-2":
            assert (rec["attempts"], row["status"]) == (["tiny-2"], "ok")
        elif rec["attempts"] == ["tiny-1"] and row["status"] == "ok":  # done before the kill
            assert rec["end_s"] <= failed_at
        elif row["status"] == "failed":
            hit += 1
            if rec["first_token_s"] is not None:  # its stream had begun: ended with an error event
                assert row["error"].startswith("node llm: stream error: replica tiny-1 failed mid-stream"), row["error"]
            else:  # not yet answered, but its deadline had passed: no retry
                assert i % 2 == 1 and rec["attempts"] == ["tiny-1"], (i, rec)
        else:  # had not reached its client: retried on the real replica
            hit += 1
            assert (rec["attempts"], rec["status"], row["status"]) == (["tiny-1", "tiny-2"], "ok", "ok")
            assert i % 2 == 0
    print(f"\n[live] kill: {' '.join(outcomes)}")
    assert hit, "the kill hit no call"
