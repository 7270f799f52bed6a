"""`cato-live replay` against ONE real vLLM server (CPU build, tiny local model).

A small Poisson trace of all four task types (prompts 8-64 tokens, outputs 4-16, 20 tasks
over about 5 s) is replayed once (module fixture) and its tables are checked exactly: every
task once and ok, token counts as requested (vLLM's usage), TTFT <= E2E, deadlines as the
Profiler computes them, summary.json = summarize() of the tables. Then a replay stopped by
SIGINT mid-run. Skipped unless CATO_VLLM_PYTHON and CATO_TINY_MODEL are set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from cato_core.profile import load_profile
from cato_core.task_plan import TaskPlan
from cato_core.tasks import default_task_types
from cato_report.summary import summarize
from cato_traces.files import write_trace

from .conftest import ROOT, SERVED_NAME, get_text

pytestmark = pytest.mark.live
TYPES = list(default_task_types())
PROFILE = "codellama-7b_a100"


def poisson_trace(n: int, rate: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "task_id": [f"t{i:03d}" for i in range(n)],
            "arrival_s": np.cumsum(rng.exponential(1 / rate, n)),
            "task_type": [TYPES[i % 4] for i in range(n)],
            "prompt_tokens": rng.integers(8, 65, n),
            "output_tokens": rng.integers(4, 17, n),
        }
    )


def replay_command() -> list[str]:
    """`cato-live replay` (the console script's entry point, without needing it installed)."""
    return [sys.executable, "-c", "from cato_live.cli import main; main()", "replay"]


def replay_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def run_replay(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*replay_command(), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=replay_env(),
    )


def load(out) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    return (
        pd.read_parquet(out / "tasks.parquet"),
        pd.read_parquet(out / "nodes.parquet"),
        pd.read_parquet(out / "replicas.parquet"),
        json.loads((out / "summary.json").read_text()),
    )


def check_complete_run(
    trace: pd.DataFrame, out, target: str, model: str, time_scale: float = 1.0, gateway: bool = False
):
    """What every finished replay must satisfy, whatever the server. ``gateway``: the target
    is a CATO gateway (replica ids and the replicas table are its own)."""
    tasks, nodes, replicas, summary = load(out)
    assert sorted(tasks["task_id"]) == sorted(trace["task_id"])  # every task exactly once
    assert set(tasks["status"]) == {"ok"}, tasks[tasks["status"] != "ok"][["task_id", "status", "error"]]
    t = tasks.set_index("task_id").loc[trace["task_id"]]
    assert (t["arrival_s"].to_numpy() == trace["arrival_s"].to_numpy() * time_scale).all()
    assert (t["ttft_s"] > 0).all() and (t["ttft_s"] <= t["e2e_s"]).all()
    assert (t["met"] == ((t["ttft_s"].where(t["metric"] == "ttft", t["e2e_s"])) <= t["sla_s"] + 1e-12)).all()

    llm = nodes[nodes["kind"] == "llm"].set_index("task_id").loc[trace["task_id"]]
    assert len(llm) == len(trace)  # one LLM node per default task type
    assert (llm["output_tokens"].to_numpy() == trace["output_tokens"].to_numpy()).all()  # usage, exact
    assert (llm["prompt_tokens"].to_numpy() == trace["prompt_tokens"].to_numpy()).all()
    assert (llm["queued_s"] < llm["first_token_s"]).all() and (llm["first_token_s"] <= llm["end_s"]).all()
    assert (llm["model"] == model).all() and (nodes["status"] == "ok").all()
    assert gateway or (llm["replica"] == target).all()
    assert np.allclose(llm["slack_s"], llm["deadline_s"] - llm["queued_s"], rtol=0, atol=1e-9)

    # Deadlines: the Profiler math on the trace (same as the simulator's, see test_replay_unit).
    prof, types = load_profile(PROFILE), default_task_types()
    for row in trace.itertuples():
        p = TaskPlan(row.task_type, types[row.task_type], model)
        base = p.baselines({}, row.prompt_tokens, row.output_tokens, default=prof)
        sla, deadlines = p.sla_and_deadlines(base, row.arrival_s * time_scale, None)
        assert t.loc[row.task_id, "sla_s"] == sla
        got = nodes[nodes["task_id"] == row.task_id].set_index("node")["deadline_s"]
        assert [got[n.name] for n in p.nodes] == deadlines

    if not gateway:
        assert replicas[["replica_id", "model", "requests"]].values.tolist() == [[target, model, len(trace)]]
        rep = replicas.iloc[0]
        assert 0 < rep["busy_s"] <= rep["released_s"] - rep["asked_s"]
        assert rep["released_s"] >= tasks["arrival_s"].max()
    assert summary["replicas_from"] == ("gateway" if gateway else "client")

    expect = summarize(tasks, replicas, {model: 1})
    assert {k: summary[k] for k in expect} == expect  # the same summarizing code as cato-sim
    assert summary["tasks_by_status"] == {"ok": len(trace)} and summary["interrupted"] is False
    assert summary["config"]["target"] == target and summary["config"]["model_resolved"] == model
    assert summary["wall_s"] > 0 and "aiohttp" in summary["versions"]
    return tasks, nodes, replicas, summary


@pytest.fixture(scope="module")
def replayed(vllm_server, tmp_path_factory):
    trace = poisson_trace(20, rate=4.0, seed=11)
    folder = tmp_path_factory.mktemp("replay-vllm")
    write_trace(trace, folder / "trace.parquet")
    t0 = time.monotonic()
    res = run_replay(
        folder / "trace.parquet",
        "--target",
        vllm_server.url,
        "--out",
        folder / "out",
        "--vocab-size",
        2000,
        "--seed",
        3,
    )
    return trace, folder / "out", res, time.monotonic() - t0


def test_replay_vllm_every_task_ok_and_exact(replayed, vllm_server, capsys):
    trace, out, res, wall = replayed
    assert res.returncode == 0, res.stderr
    assert "Goodput rate" in res.stdout and f"results: {out}" in res.stderr
    _tasks, _nodes, _, summary = check_complete_run(trace, out, vllm_server.url, SERVED_NAME)
    with capsys.disabled():
        print(
            f"\n[live] replay of {len(trace)} tasks on vLLM in {wall:.1f} s: TTFT p95 "
            f"{summary['ttft_p95'] * 1000:.0f} ms, E2E p95 {summary['e2e_p95'] * 1000:.0f} ms, "
            f"Goodput rate {summary['goodput_rate']:.2f}"
        )


def test_replay_vllm_tool_nodes_are_timed_sleeps(replayed):
    """completion: retrieve (about 50 ms) before its llm; translation: validate after its llm."""
    trace, out, res, _ = replayed
    assert res.returncode == 0, res.stderr
    _, nodes, _, _ = load(out)
    tools = nodes[nodes["kind"] == "tool"].set_index("task_id")
    llm = nodes[nodes["kind"] == "llm"].set_index("task_id")
    comp = trace.loc[trace["task_type"] == "completion", "task_id"]
    trans = trace.loc[trace["task_type"] == "translation", "task_id"]
    assert (tools.loc[comp, "node"] == "retrieve").all() and (tools.loc[trans, "node"] == "validate").all()
    dur = tools["end_s"] - tools["start_s"]
    assert (dur.loc[comp] > 0.01).all() and (dur.loc[comp] < 0.3).all()  # median 50 ms, sigma 0.25
    assert (llm.loc[comp, "queued_s"] >= tools.loc[comp, "end_s"]).all()
    assert (tools.loc[trans, "start_s"] >= llm.loc[trans, "end_s"]).all()


def finished_requests(url: str) -> float:
    total = 0.0
    for line in get_text(url + "/metrics").splitlines():
        if line.startswith("vllm:request_success_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_replay_vllm_sigint_marks_the_rest_cancelled(vllm_server, tmp_path):
    """SIGINT mid-run: exit 130, every task in tasks.parquet once, the unfinished ones cancelled."""
    trace = poisson_trace(40, rate=2.0, seed=5)  # about 20 s of arrivals
    write_trace(trace, tmp_path / "trace.parquet")
    before = finished_requests(vllm_server.url)
    proc = subprocess.Popen(
        [
            *replay_command(),
            str(tmp_path / "trace.parquet"),
            "--target",
            vllm_server.url,
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        env=replay_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while finished_requests(vllm_server.url) < before + 3:  # some tasks are done
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no request finished within 120 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "(interrupted)" in stderr and "Traceback" not in stderr
    tasks, nodes, replicas, summary = load(tmp_path / "out")
    assert sorted(tasks["task_id"]) == sorted(trace["task_id"])  # every task exactly once
    counts = tasks["status"].value_counts().to_dict()
    assert set(counts) <= {"ok", "cancelled"} and counts.get("ok", 0) >= 1 and counts.get("cancelled", 0) >= 1
    cancelled = tasks[tasks["status"] == "cancelled"]
    assert cancelled["error"].str.startswith("replay stopped").all() and not cancelled["met"].any()
    assert set(nodes.loc[nodes["end_s"].isna(), "status"]) <= {"cancelled"}
    assert summary["interrupted"] is True and summary["tasks_by_status"] == counts
    assert len(replicas) == 1
