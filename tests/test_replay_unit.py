"""The replayer without a model server: deadline headers (exact numbers, and equal to the
simulator's node deadlines), result-table rows, a target that refuses connections, and the
CLI's answers to bad input."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cato_core.node_record import NodeRecord
from cato_core.profile import load_profile
from cato_core.task_plan import TaskPlan
from cato_core.task_run import TaskRun
from cato_core.tasks import default_task_types
from cato_live.headers import deadline_ms, request_headers
from cato_live.provisioners.vllm_process import free_port
from cato_live.replay.replayer import MIN_TOKEN_ID, ReplayConfig, Replayer, busy_seconds, prompt_ids, tool_durations
from cato_report.summary import summarize
from cato_sim.experiment import parse_experiment
from cato_sim.simulation import Simulation
from cato_traces.files import write_trace
from tests.conftest import ROOT, round_profile

TYPES = default_task_types()


def plan(name: str) -> TaskPlan:
    return TaskPlan(name, TYPES[name], "m")


# -- deadlines and the header ------------------------------------------------------------
def test_completion_deadlines_and_header_exact():
    """retrieve (tool, 50 ms) -> llm (TTFT-critical: baseline = prefill = 10 ms + 40 x 1 ms).

    Critical path 0.1 s, SLA 3 x 0.1 = 0.3 s, budgets 0.15 + 0.15: deadlines arrival + 0.15
    and arrival + 0.3; sent at arrival + 0.2 the llm node has 100 ms left.
    """
    p = plan("completion")
    base = p.baselines({}, 40, 11, default=round_profile())
    assert base == [0.05, 0.05]
    sla, deadlines = p.sla_and_deadlines(base, 2.0, None)
    assert sla == pytest.approx(0.3, abs=1e-15)
    assert deadlines == pytest.approx([2.15, 2.3], abs=1e-15)
    assert request_headers("completion", "t7", "llm", sla, deadlines[1], 2.2) == {
        "X-CATO-Task": "completion",
        "X-CATO-Task-Id": "t7",
        "X-CATO-Node": "llm",
        "X-CATO-SLA-Ms": "300.000",
        "X-CATO-Deadline-Ms": "100.000",
    }
    assert deadline_ms(deadlines[1], 2.35) == "-50.000"  # past its deadline: negative
    assert deadline_ms(2.0 + 0.0123456, 2.0) == "12.346"  # to the microsecond


def test_translation_deadlines_with_and_without_trace_sla():
    """llm (E2E-critical: prefill 50 ms + 10 decode steps of 11 ms = 0.16 s) -> validate (0.5 s)."""
    p = plan("translation")
    base = p.baselines({}, 40, 11, default=round_profile())
    assert base == pytest.approx([0.16, 0.5], abs=1e-15)
    sla, deadlines = p.sla_and_deadlines(base, 2.0, None)  # the type's SLA: 3 x 0.66 s
    assert sla == pytest.approx(1.98, abs=1e-12)
    assert deadlines == pytest.approx([2.0 + 1.98 * 0.16 / 0.66, 3.98], abs=1e-12)
    sla, deadlines = p.sla_and_deadlines(base, 2.0, 3.3)  # the trace's sla_s wins
    assert sla == 3.3
    assert deadlines == pytest.approx([2.8, 5.3], abs=1e-12)
    assert p.sla_and_deadlines(base, 2.0, float("nan"))[0] == pytest.approx(1.98, abs=1e-12)  # NaN: none given
    assert deadline_ms(deadlines[0], 2.05) == "750.000"


def test_deadlines_equal_the_simulators(tmp_path):
    """Same profile, trace and arrivals: every node deadline and task SLA the replayer sends
    equals, to the last bit, the one the simulator records."""
    rng = np.random.default_rng(5)
    n = 24
    trace = pd.DataFrame(
        {
            "task_id": [f"t{i}" for i in range(n)],
            "arrival_s": np.sort(rng.uniform(0, 3, n)),
            "task_type": [list(TYPES)[i % 4] for i in range(n)],
            "prompt_tokens": rng.integers(1, 2000, n),
            "output_tokens": rng.integers(1, 300, n),
            "sla_s": [2.5 if i % 5 == 0 else float("nan") for i in range(n)],
        }
    )
    exp = parse_experiment(
        {
            "trace": {"path": "unused.parquet"},
            "models": {"m": {"profile": "codellama-7b_a100", "replicas": 2}},
            "setups": [{"name": "s", "router": "cato"}],
        },
        "test",
    )
    Simulation(exp, exp.setups[0], trace, tmp_path, seed=1).run()
    sim_nodes = pd.read_parquet(tmp_path / "nodes.parquet").set_index(["task_id", "node"])["deadline_s"]
    sim_tasks = pd.read_parquet(tmp_path / "tasks.parquet").set_index("task_id")["sla_s"]
    prof = load_profile("codellama-7b_a100")
    checked = 0
    for row in trace.itertuples():
        p = plan(row.task_type)
        base = p.baselines({}, row.prompt_tokens, row.output_tokens, default=prof)
        sla, deadlines = p.sla_and_deadlines(base, row.arrival_s, row.sla_s)
        assert sla == sim_tasks[row.task_id]
        for node, d in zip(p.nodes, deadlines, strict=True):
            if (row.task_id, node.name) in sim_nodes.index:
                assert d == sim_nodes[(row.task_id, node.name)], (row.task_id, node.name)
                checked += 1
    assert checked >= n


# -- what a task draws ---------------------------------------------------------------------
def test_tool_durations_seeded_lognormal():
    p = plan("completion")
    z = np.random.default_rng([7, 3]).standard_normal()
    assert tool_durations(p, np.random.default_rng([7, 3])) == [0.05 * math.exp(0.25 * z), 0.0]
    fixed = TaskPlan(
        "c",
        TYPES["completion"].model_copy(
            update={
                "nodes": (
                    TYPES["completion"]
                    .nodes[0]
                    .model_copy(update={"tool": TYPES["completion"].nodes[0].tool.model_copy(update={"sigma": 0.0})}),
                    TYPES["completion"].nodes[1],
                )
            }
        ),
        "m",
    )
    assert tool_durations(fixed, np.random.default_rng(0)) == [0.05, 0.0]  # sigma 0: the median


def test_prompt_ids_exact_length_within_vocab():
    ids = prompt_ids(np.random.default_rng(1), 500, 64)
    assert len(ids) == 500 and min(ids) >= MIN_TOKEN_ID and max(ids) < 64
    assert ids == prompt_ids(np.random.default_rng(1), 500, 64)


# -- result rows (the replayer's records through the core's TaskRun) ------------------------
def make_task(name="completion", arrival=1.0, prompt=40, output=11) -> TaskRun:
    return TaskRun.from_profiles("t1", plan(name), arrival, prompt, output, {}, default=round_profile())


def record(t: TaskRun, i: int, **fields) -> NodeRecord:
    """Node i's record as the replayer leaves it: what the client saw, no engine start."""
    n = t.plan.nodes[i]
    t.records[i] = rec = NodeRecord("t1", n.name, n.kind, n.model, t.deadlines[i], **fields)
    return rec


def test_rows_of_an_ok_task():
    t = make_task()
    record(t, 0, queued_s=1.0, start_s=1.0, end_s=1.06)
    record(
        t,
        1,
        replica="r1",
        priority=2,
        slack_s=0.24,
        queued_s=1.06,
        first_token_s=1.09,
        end_s=1.2,
        prompt_tokens=40,
        output_tokens=11,
    )
    row = t.end(1.2, "ok", None)
    assert row[:4] == ("t1", "completion", "ttft", 1.0)
    assert row[4] == pytest.approx(0.09) and row[5] == pytest.approx(0.2)
    assert row[6:] == (t.sla_s, True, "ok", None)
    nodes = t.node_rows()
    assert nodes[0] == (
        "t1",
        "retrieve",
        "tool",
        None,
        None,
        None,
        None,
        None,
        0.0,
        t.deadlines[0],
        1.0,
        1.0,
        None,
        1.06,
        None,
        None,
        "ok",
    )
    assert nodes[1] == (
        "t1",
        "llm",
        "llm",
        "m",
        "r1",
        2,
        0.24,
        None,
        None,
        t.deadlines[1],
        1.06,
        None,
        1.09,
        1.2,
        40,
        11,
        "ok",
    )


def test_rows_of_a_late_failed_and_cancelled_task():
    t = make_task()
    record(t, 0, queued_s=1.0, start_s=1.0, end_s=1.06)
    record(t, 1, queued_s=1.06, first_token_s=1.5, end_s=1.6, prompt_tokens=40, output_tokens=11)
    assert t.end(1.6, "ok", None)[7] is False  # TTFT 0.5 s > SLA 0.3 s: ok but not met

    t = make_task()
    record(t, 0, queued_s=1.0, start_s=1.0, end_s=1.06)
    record(t, 1, replica="http://x", queued_s=1.06)
    row = t.end(1.1, "failed", "node llm: HTTP 500: boom")
    assert row[4:] == (None, None, t.sla_s, False, "failed", "node llm: HTTP 500: boom")
    assert [r[-1] for r in t.node_rows()] == ["ok", "failed"]  # the finished tool stays ok

    t = make_task("translation")
    record(t, 0, queued_s=1.0, first_token_s=1.01)
    row = t.end(1.3, "cancelled", "stopped")
    assert row[4] == pytest.approx(0.01) and row[5] is None and row[7] is False
    assert [r[1] for r in t.node_rows()] == ["llm"]  # validate never started: no row
    assert t.node_rows()[0][-1] == "cancelled"


def test_busy_seconds_is_the_union_of_in_flight_intervals():
    assert busy_seconds([]) == 0.0
    assert busy_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0), (3.5, 3.75)]) == 3.0


# -- a target that refuses connections -------------------------------------------------------
def small_trace(n=8, gap=0.02) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "task_id": [f"t{i}" for i in range(n)],
            "arrival_s": np.arange(n) * gap,
            "task_type": [list(TYPES)[i % 4] for i in range(n)],
            "prompt_tokens": 8 + np.arange(n),
            "output_tokens": 4 + np.arange(n),
        }
    )


def test_refused_target_fails_every_task_with_the_reason(tmp_path):
    trace = small_trace()
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = ReplayConfig(target=url, model="m", profile=round_profile(), task_types=TYPES, seed=1, timeout_s=10)
    result = asyncio.run(Replayer(trace, cfg, tmp_path).run())
    tasks = pd.read_parquet(tmp_path / "tasks.parquet")
    nodes = pd.read_parquet(tmp_path / "nodes.parquet")
    replicas = pd.read_parquet(tmp_path / "replicas.parquet")
    assert sorted(tasks["task_id"]) == sorted(trace["task_id"])
    assert set(tasks["status"]) == {"failed"} and result.by_status == {"failed": len(trace)}
    assert tasks["error"].str.startswith("node llm: ClientConnectorError").all(), tasks["error"].tolist()
    assert not tasks["met"].any() and tasks["e2e_s"].isna().all()
    llm = nodes[nodes["kind"] == "llm"]
    assert len(llm) == len(trace) and (llm["status"] == "failed").all() and (llm["replica"] == url).all()
    assert (nodes.loc[nodes["kind"] == "tool", "status"] == "ok").all()  # completion's retrieve ran
    assert set(nodes.loc[nodes["kind"] == "tool", "node"]) == {"retrieve"}  # validate never started
    assert replicas[["replica_id", "model", "requests"]].values.tolist() == [[url, "m", len(trace)]]
    assert not result.interrupted and result.replicas_from == "client"


# -- the command line ------------------------------------------------------------------------
def replay_cli(*args, timeout=120) -> subprocess.CompletedProcess:
    """`cato-live replay ARGS` as a child process (real exit code, stdout and stderr)."""
    cmd = [sys.executable, "-c", "from cato_live.cli import main; main()", "replay"]
    return subprocess.run(
        [*cmd, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )


def test_cli_refused_target_exit_1_and_tables(tmp_path):
    write_trace(small_trace(4), tmp_path / "trace.parquet")
    url = f"http://127.0.0.1:{free_port()}"
    res = replay_cli(tmp_path / "trace.parquet", "--target", url, "--out", tmp_path / "out", "--model", "m")
    assert res.returncode == 1, res.stderr
    assert "Goodput rate" in res.stdout and "4 failed" in res.stderr
    tasks = pd.read_parquet(tmp_path / "out" / "tasks.parquet")
    assert len(tasks) == 4 and set(tasks["status"]) == {"failed"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    expect = summarize(tasks, pd.read_parquet(tmp_path / "out" / "replicas.parquet"))
    assert {k: summary[k] for k in expect} == expect
    assert summary["config"]["target"] == url and summary["seed"] == 0 and summary["tasks_by_status"] == {"failed": 4}


@pytest.mark.parametrize("case", ["missing trace", "missing column", "bad url", "both targets", "bad scale"])
def test_cli_bad_input_one_line_exit_2(tmp_path, case):
    good = tmp_path / "trace.parquet"
    write_trace(small_trace(2), good)
    args = [good, "--target", "http://127.0.0.1:9", "--out", tmp_path / "out"]
    if case == "missing trace":
        args[0], expect = tmp_path / "nope.parquet", f"{tmp_path / 'nope.parquet'}: trace: an existing parquet file"
    elif case == "missing column":
        small_trace(2).drop(columns="output_tokens").to_parquet(tmp_path / "bad.parquet")
        args[0], expect = tmp_path / "bad.parquet", f"{tmp_path / 'bad.parquet'}: output_tokens: a required column"
    elif case == "bad url":
        args[2], expect = "localhost:8000", "--target: localhost:8000: an http:// or https:// URL"
    elif case == "both targets":
        args += ["--deploy", good]
        expect = "replay: --target/--deploy: exactly one of them"
    else:
        args += ["--time-scale", "0"]
        expect = "--time-scale: 0.0: a number > 0"
    res = replay_cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + expect), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()
