"""The core's task run, worked by hand: a diamond graph walked in every completion order,
a task that ends once, its rows for ok / failed / timeout, and `met` at the SLA's edge.

Times are multiples of 1/8 s, so every difference below is exact in floats."""

from __future__ import annotations

from cato_core.node_record import NodeRecord
from cato_core.replica import REPLICA_FIELDS
from cato_core.results import NODES, REPLICAS, STATUSES, TASKS
from cato_core.task_plan import TaskPlan
from cato_core.task_run import MET_TOLERANCE_S, TASK_FIELDS, TaskRun, met
from cato_core.tasks import Node, Sla, TaskType, ToolTime, default_task_types
from tests.conftest import round_profile


def diamond(metric: str = "e2e") -> TaskPlan:
    """a (tool) -> b (llm), a -> c (tool), b and c -> d (llm, streamed)."""
    t = TaskType(
        metric=metric,
        sla=Sla(seconds=2.0),
        nodes=(
            Node(name="a", kind="tool", tool=ToolTime(median_s=0.125)),
            Node(name="b", kind="llm", after=("a",)),
            Node(name="c", kind="tool", after=("a",), tool=ToolTime(median_s=0.25)),
            Node(name="d", kind="llm", after=("b", "c")),
        ),
    )
    return TaskPlan("diamond", t, "m")


DEADLINES = [1.25, 1.75, 1.75, 3.0]


def run_of(plan: TaskPlan | None = None, sla: float = 2.0) -> TaskRun:
    return TaskRun("t1", plan or diamond(), 1.0, 40, 8, sla, DEADLINES)


# -- the walk -------------------------------------------------------------------------------
def test_diamond_b_then_c():
    run = run_of()
    a, b, c, d = run.plan.nodes
    assert run.sources() == (a,)
    run.start_node(a, 1.0)
    assert run.node_done(0, 1.125) == [b, c]
    run.start_node(b, 1.125)
    run.start_node(c, 1.125)
    assert run.node_done(1, 1.5) == []  # d still waits for c
    assert not run.finished
    assert run.node_done(2, 1.625) == [d]
    run.start_node(d, 1.625)
    assert not run.finished
    assert run.node_done(3, 2.5) == []
    assert run.finished


def test_diamond_c_then_b():
    run = run_of()
    a, b, c, d = run.plan.nodes
    run.start_node(a, 1.0)
    assert run.node_done(0, 1.125) == [b, c]
    run.start_node(c, 1.125)
    run.start_node(b, 1.125)
    assert run.node_done(2, 1.375) == []
    assert run.node_done(1, 1.5) == [d]
    run.start_node(d, 1.5)
    assert run.node_done(3, 2.0) == [] and run.finished


def test_start_node_records():
    run = run_of()
    a, b, _, _ = run.plan.nodes
    assert run.start_node(a, 1.0) == NodeRecord("t1", "a", "tool", None, 1.25, queued_s=1.0, start_s=1.0)
    assert run.start_node(b, 1.125) == NodeRecord(
        "t1", "b", "llm", "m", 1.75, queued_s=1.125, prompt_tokens=40, output_tokens=8
    )
    assert run.records[1].status == "running" and run.records[2] is None
    own = NodeRecord("t1", "b", "llm", "m", 1.75)
    assert run.start_node(b, 1.25, own) is own and run.records[1] is own and own.queued_s is None  # as given
    run.node_done(1, 1.5)
    assert (own.end_s, own.status) == (1.5, "ok")


def test_from_profiles_is_the_plans_sla_and_deadlines():
    plan = diamond()
    run = TaskRun.from_profiles("t9", plan, 2.0, 40, 11, {}, None, default=round_profile())
    sla, deadlines = plan.sla_and_deadlines(plan.baselines({}, 40, 11, default=round_profile()), 2.0)
    assert (run.sla_s, run.deadlines) == (2.0, deadlines) and sla == 2.0
    assert TaskRun.from_profiles("t9", plan, 2.0, 40, 11, {"m": round_profile()}, 3.5).sla_s == 3.5


def test_a_task_ends_once():
    run = run_of()
    a, b, c, _ = run.plan.nodes
    run.start_node(a, 1.0)
    run.node_done(0, 1.125)
    run.start_node(b, 1.125)
    run.start_node(c, 1.125)
    row = run.end(1.25, "cancelled", "stopped")
    assert row == ("t1", "diamond", "e2e", 1.0, None, None, 2.0, False, "cancelled", "stopped")
    assert run.done
    assert run.end(1.5, "ok", None) is None  # the second end writes nothing
    assert run.end(1.5, "failed", "late") is None
    assert run.node_done(1, 1.5) == [] and run.records[1].end_s is None  # after the end: nothing
    assert [r[-1] for r in run.node_rows()] == ["ok", "cancelled", "cancelled"]


# -- rows -----------------------------------------------------------------------------------
def walked_to_d(run: TaskRun) -> NodeRecord:
    """a 1.0-1.125; b routed 1.125 to r1 (priority 1, slack 0.625, predicted wait 0.125), taken
    1.25, first token 1.375, done 1.5; c 1.125-1.375; d queued 1.5; returns d's record."""
    a, b, c, d = run.plan.nodes
    run.start_node(a, 1.0)
    run.node_done(0, 1.125)
    rb = run.start_node(b, 1.125)
    rb.replica, rb.priority, rb.slack_s, rb.predicted_wait_s = "r1", 1, 0.625, 0.125
    rb.start_s, rb.first_token_s = 1.25, 1.375
    run.start_node(c, 1.125)
    run.node_done(1, 1.5)
    run.node_done(2, 1.375)
    return run.start_node(d, 1.5)


ROW_A = ("t1", "a", "tool", None, None, None, None, None, 0.0, 1.25, 1.0, 1.0, None, 1.125, None, None, "ok")
ROW_B = ("t1", "b", "llm", "m", "r1", 1, 0.625, 0.125, 0.125, 1.75, 1.125, 1.25, 1.375, 1.5, 40, 8, "ok")
ROW_C = ("t1", "c", "tool", None, None, None, None, None, 0.0, 1.75, 1.125, 1.125, None, 1.375, None, None, "ok")


def test_rows_of_an_ok_task():
    run = run_of()
    rd = walked_to_d(run)
    rd.replica, rd.start_s, rd.first_token_s = "r2", 1.625, 2.25
    assert run.node_done(3, 2.75) == [] and run.finished
    assert run.end(2.75, "ok", None) == ("t1", "diamond", "e2e", 1.0, 1.25, 1.75, 2.0, True, "ok", None)
    assert run.node_rows() == [
        ROW_A,
        ROW_B,
        ROW_C,
        ("t1", "d", "llm", "m", "r2", None, None, None, 0.125, 3.0, 1.5, 1.625, 2.25, 2.75, 40, 8, "ok"),
    ]
    assert all(len(r) == len(NODES) for r in run.node_rows())


def test_rows_of_a_failed_task():
    """d fails after its first token: TTFT is kept, E2E is not; d takes the task's status."""
    run = run_of()
    rd = walked_to_d(run)
    rd.first_token_s = 2.0
    assert run.end(2.125, "failed", "node d: HTTP 500: boom") == (
        "t1",
        "diamond",
        "e2e",
        1.0,
        1.0,
        None,
        2.0,
        False,
        "failed",
        "node d: HTTP 500: boom",
    )
    assert run.node_rows()[:3] == [ROW_A, ROW_B, ROW_C]
    assert run.node_rows()[3] == (
        "t1",
        "d",
        "llm",
        "m",
        None,
        None,
        None,
        None,
        None,
        3.0,
        1.5,
        None,
        2.0,
        None,
        40,
        8,
        "failed",
    )


def test_rows_of_a_timed_out_task():
    """Still running at the horizon: b has its first token, c runs; d never started (no row).
    A node its driver ended keeps its end and is ok (the simulator's failed call)."""
    run = run_of()
    a, b, c, _ = run.plan.nodes
    run.start_node(a, 1.0)
    run.node_done(0, 1.125)
    rb = run.start_node(b, 1.125)
    rb.first_token_s = 1.5
    run.start_node(c, 1.125)
    assert run.end(9.0, "timeout", "not finished 5 s after the last arrival") == (
        "t1",
        "diamond",
        "e2e",
        1.0,
        None,
        None,
        2.0,
        False,
        "timeout",
        "not finished 5 s after the last arrival",
    )
    rows = run.node_rows()
    assert [(r[1], r[12], r[13], r[-1]) for r in rows] == [
        ("a", None, 1.125, "ok"),
        ("b", 1.5, None, "timeout"),
        ("c", None, None, "timeout"),
    ]

    run = TaskRun("t2", TaskPlan("generation", default_task_types()["generation"], "m"), 1.0, 40, 8, 2.0, [3.0])
    rec = run.start_node(run.sources()[0], 1.0)
    rec.first_token_s, rec.end_s = 1.5, 1.75  # its driver saw it fail at its end
    assert run.end(1.75, "failed", "node llm: boom")[4:] == (0.5, None, 2.0, False, "failed", "node llm: boom")
    assert run.node_rows()[0][-1] == "ok"


# -- met ------------------------------------------------------------------------------------
def test_met_at_the_edge_of_the_sla():
    assert met("ok", 2.0, 2.0) is True  # exactly the SLA
    assert met("ok", 2.0 + 1e-9, 2.0) is False
    assert met("ok", 0.1 + 0.2, 0.3) is True  # 0.30000000000000004: a sum of floats, within tolerance
    assert 0.1 + 0.2 > 0.3 and MET_TOLERANCE_S == 1e-12
    assert met("failed", 1.0, 2.0) is False and met("ok", None, 2.0) is False

    def ended_at(end: float) -> tuple:
        run = TaskRun(
            "t3", TaskPlan("summarization", default_task_types()["summarization"], "m"), 1.0, 40, 8, 2.0, [3.0]
        )
        run.start_node(run.sources()[0], 1.0).first_token_s = 1.25
        run.node_done(0, end)
        return run.end(end, "ok", None)

    assert ended_at(3.0)[5:8] == (2.0, 2.0, True)
    assert ended_at(3.0 + 1e-9)[7] is False


def test_ttft_task_met_with_e2e_over_its_sla():
    run = run_of(diamond("ttft"), sla=1.0)
    rd = walked_to_d(run)
    rd.first_token_s = 1.875
    run.node_done(3, 6.0)
    assert run.end(6.0, "ok", None) == ("t1", "diamond", "ttft", 1.0, 0.875, 5.0, 1.0, True, "ok", None)


def test_rows_match_the_result_schema():
    assert tuple(TASKS.names) == TASK_FIELDS
    assert tuple(REPLICAS.names) == REPLICA_FIELDS
    assert STATUSES == ("ok", "failed", "timeout", "cancelled")
    run = run_of()
    for s in STATUSES:
        assert len(run_of().end(1.0, s, None)) == len(TASKS)
    assert run.node_rows() == []  # nothing started


# -- the asyncio walk of the live drivers (cato_live.task_walk) -------------------------------
def test_walk_runs_each_node_after_its_predecessors_and_cancels_on_failure():
    import asyncio

    from cato_live.task_walk import walk

    async def go(fail: str | None, durations: dict[str, float]) -> tuple[list, list, object]:
        run, log, clock = run_of(), [], {"t": 0.0}

        async def run_node(n):
            run.start_node(n, clock["t"])
            log.append(("start", n.name))
            try:
                await asyncio.sleep(durations[n.name])
            except asyncio.CancelledError:
                log.append(("cancelled", n.name))
                raise
            if n.name == fail:
                raise RuntimeError(f"{n.name} broke")
            log.append(("end", n.name))
            return {"a": 1.125, "b": 1.5, "c": 1.375, "d": 2.0}[n.name]

        try:
            out = await walk(run, run_node)
        except RuntimeError as e:
            out = e
        run.end(3.0, "failed" if fail else "ok", None)
        return log, [r[-1] for r in run.node_rows()], out

    log, _, end = asyncio.run(go(None, {"a": 0.01, "b": 0.03, "c": 0.01, "d": 0.01}))
    assert log == [
        ("start", "a"),
        ("end", "a"),
        ("start", "b"),
        ("start", "c"),
        ("end", "c"),
        ("end", "b"),
        ("start", "d"),
        ("end", "d"),
    ]
    assert end == 2.0  # the latest end, whatever the order of completion
    log, statuses, err = asyncio.run(go("c", {"a": 0.01, "b": 0.5, "c": 0.01, "d": 0.01}))
    assert str(err) == "c broke"
    assert log == [("start", "a"), ("end", "a"), ("start", "b"), ("start", "c"), ("cancelled", "b")]
    assert statuses == ["ok", "failed", "failed"]  # b cut short and c failed take the task's status
