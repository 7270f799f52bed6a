"""cato_report.fidelity and cato_report.wait_prediction on small hand-made result tables.

Percentiles are numpy's linear ones: for 4 values v1 <= ... <= v4, P50 = (v2 + v3) / 2 and
P95 = v3 + 0.85 (v4 - v3); for 3, P95 = v2 + 0.9 (v3 - v2).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cato_core.results import NODES, TASKS
from cato_report.fidelity import LostTasks, check_every_task_once, fidelity
from cato_report.fidelity_markdown import fidelity_markdown
from cato_report.wait_prediction import wait_prediction

TASK_ROWS = {
    # task_id, task_type, ttft_s, e2e_s, met, status
    "sim": [
        ("a", "gen", 0.1, 0.4, True, "ok"),
        ("b", "gen", 0.3, 0.8, True, "ok"),
        ("c", "sum", 0.2, 1.0, False, "ok"),
        ("d", "sum", 0.4, 2.0, True, "ok"),
    ],
    "live": [
        ("a", "gen", 0.2, 0.5, True, "ok"),
        ("b", "gen", 0.2, 1.0, False, "ok"),
        ("c", "sum", 0.2, 1.5, True, "ok"),
        ("d", "sum", None, None, False, "failed"),
    ],
}
NODE_ROWS = {
    # kind, predicted_wait_s, wait_s
    "sim": [
        ("llm", 0.0, 0.0),  # err 0, rel 0
        ("llm", 0.1, 0.05),  # err 0.05, rel 0.05 / 0.05 = 1
        ("llm", 0.02, 0.5),  # err 0.48, rel 0.48 / 0.5 = 0.96
        ("tool", None, None),  # not an LLM call
        ("llm", 0.3, None),  # never taken by an engine
    ],
    "live": [
        ("llm", 0.004, 0.0),  # err 0.004, rel 0.004 / max(0, 10 ms) = 0.4
        ("llm", None, 0.2),  # no prediction (a call the gateway did not route)
    ],
}


def write_run(folder, tasks, nodes):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"task_id": i, "task_type": t, "ttft_s": ttft, "e2e_s": e2e, "met": met, "status": s}
        for i, t, ttft, e2e, met, s in tasks
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=TASKS), folder / "tasks.parquet")
    rows = [
        {"task_id": f"n{i}", "node": "llm", "kind": k, "predicted_wait_s": p, "wait_s": w}
        for i, (k, p, w) in enumerate(nodes)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=NODES), folder / "nodes.parquet")
    return folder


@pytest.fixture
def runs(tmp_path):
    return {side: write_run(tmp_path / side, TASK_ROWS[side], NODE_ROWS[side]) for side in ("sim", "live")}


def test_overall_percentiles_errors_and_goodput(runs):
    o = fidelity(runs["sim"], runs["live"])["overall"]
    assert o["ttft_p50"] == pytest.approx({"sim": 0.25, "live": 0.2, "rel_err": 0.25, "goal_met": False})
    assert o["ttft_p95"]["sim"] == pytest.approx(0.385)
    assert o["ttft_p95"]["rel_err"] == pytest.approx(0.385 / 0.2 - 1)
    assert o["e2e_p50"] == pytest.approx({"sim": 0.9, "live": 1.0, "rel_err": -0.1, "goal_met": True})
    assert o["e2e_p95"] == pytest.approx({"sim": 1.85, "live": 1.45, "rel_err": 1.85 / 1.45 - 1, "goal_met": False})
    assert o["goodput_rate"] == pytest.approx({"sim": 0.75, "live": 0.5, "abs_err": 0.25, "goal_met": False})
    assert o["status"] == {"sim": {"ok": 4}, "live": {"failed": 1, "ok": 3}}
    assert "live2" not in o["ttft_p50"]


def test_by_task_type(runs):
    by = fidelity(runs["sim"], runs["live"])["by_task_type"]
    assert sorted(by) == ["gen", "sum"]
    gen, summ = by["gen"], by["sum"]
    assert gen["ttft_p50"] == pytest.approx({"sim": 0.2, "live": 0.2, "rel_err": 0.0, "goal_met": True})
    assert gen["ttft_p95"] == pytest.approx({"sim": 0.29, "live": 0.2, "rel_err": 0.45, "goal_met": False})
    assert gen["goodput_rate"] == pytest.approx({"sim": 1.0, "live": 0.5, "abs_err": 0.5, "goal_met": False})
    assert summ["ttft_p50"] == pytest.approx({"sim": 0.3, "live": 0.2, "rel_err": 0.5, "goal_met": False})
    assert summ["e2e_p95"]["live"] == pytest.approx(1.5)  # the failed task has no E2E
    assert summ["goodput_rate"] == pytest.approx({"sim": 0.5, "live": 0.5, "abs_err": 0.0, "goal_met": True})


def test_wait_prediction(runs):
    assert wait_prediction(runs["sim"] / "nodes.parquet") == pytest.approx(
        {"median_abs_err_s": 0.05, "median_abs_rel_err": 0.96, "calls": 3}
    )
    assert wait_prediction(runs["live"] / "nodes.parquet") == pytest.approx(
        {"median_abs_err_s": 0.004, "median_abs_rel_err": 0.4, "calls": 1}
    )
    assert wait_prediction(runs["live"] / "nodes.parquet", floor_s=0.002)["median_abs_rel_err"] == pytest.approx(2.0)
    report = fidelity(runs["sim"], runs["live"])
    assert report["wait_prediction"]["sim"]["calls"] == 3 and report["wait_prediction"]["live"]["calls"] == 1


def test_wait_prediction_of_no_calls(tmp_path):
    run = write_run(tmp_path / "r", TASK_ROWS["sim"], [("tool", None, None)])
    assert wait_prediction(run / "nodes.parquet") == {"median_abs_err_s": None, "median_abs_rel_err": None, "calls": 0}


def test_live_spread_and_verdict(runs, tmp_path):
    # live2 = the simulator's tables: the spread equals the simulator's error, so every row
    # with figures is within twice it.
    live2 = write_run(tmp_path / "live2", TASK_ROWS["sim"], NODE_ROWS["sim"])
    report = fidelity(runs["sim"], runs["live"], live2)
    row = report["overall"]["ttft_p50"]
    assert row["live2"] == pytest.approx(0.25) and row["live_spread"] == pytest.approx(0.25)
    assert row["within_2x_spread"] is True
    g = report["overall"]["goodput_rate"]
    assert g["live_spread"] == pytest.approx(0.25) and g["within_2x_spread"] is True
    assert report["verdict"] == {"sim_within_2x_live_spread": True, "rows_checked": 15, "rows_within": 15}
    assert report["wait_prediction"]["live2"]["calls"] == 3
    # live2 = live: no spread at all, so only the rows the simulator got exactly are within it
    same = write_run(tmp_path / "same", TASK_ROWS["live"], NODE_ROWS["live"])
    report = fidelity(runs["sim"], runs["live"], same)
    assert report["overall"]["ttft_p50"]["live_spread"] == 0.0
    assert report["overall"]["ttft_p50"]["within_2x_spread"] is False
    assert report["by_task_type"]["gen"]["ttft_p50"]["within_2x_spread"] is True  # rel_err 0
    v = report["verdict"]
    assert v["sim_within_2x_live_spread"] is False and v["rows_checked"] == 15
    assert v["rows_within"] == 3  # gen TTFT P50, sum E2E P50 (1.5 s both) and sum Goodput: exact


def test_every_task_once(runs):
    check_every_task_once(["a", "b", "c", "d"], runs["live"] / "tasks.parquet")
    with pytest.raises(LostTasks) as e:
        check_every_task_once(["a", "b", "c", "d", "e"], runs["live"] / "tasks.parquet")
    assert e.value.missing == ["e"] and not e.value.repeated and not e.value.extra
    assert "tasks.parquet: task_id: every task of the trace exactly once; missing 1" in str(e.value)


def test_repeated_and_extra_tasks_are_lost_tasks(tmp_path):
    rows = [*TASK_ROWS["sim"], TASK_ROWS["sim"][0], ("z", "gen", 0.1, 0.2, True, "ok")]
    run = write_run(tmp_path / "r", rows, [])
    with pytest.raises(LostTasks) as e:
        check_every_task_once(["a", "b", "c", "d"], run / "tasks.parquet")
    assert (e.value.missing, e.value.repeated, e.value.extra) == ([], ["a"], ["z"])


def test_markdown_table(runs, tmp_path):
    live2 = write_run(tmp_path / "live2", TASK_ROWS["sim"], NODE_ROWS["sim"])
    md = fidelity_markdown(fidelity(runs["sim"], runs["live"], live2), {"trace": "t.parquet"})
    assert "Goal: P50 within 10%, P95 within 15%, Goodput within 3 points" in md
    assert "| all | TTFT P50 | 250.0 ms | 200.0 ms | +25.0% | ±10% | **no** | 250.0 ms | +25.0% | yes |" in md
    assert "| gen | Goodput | 100.0% | 50.0% | +50.0 pt | ±3 pt | **no** |" in md
    assert "| sim | 3 | 50.0 ms | 96.0% |" in md
    assert "Goal met on 4 of 15 rows." in md


def write_calls(folder, tasks, calls):
    """A run of ``tasks`` (as TASK_ROWS) whose LLM calls are (task_id, first_token_s, end_s,
    output_tokens, status)."""
    write_run(folder, tasks, [])
    rows = [
        {"task_id": i, "node": "llm", "kind": "llm", "first_token_s": f, "end_s": e, "output_tokens": o, "status": s}
        for i, f, e, o, s in calls
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=NODES), folder / "nodes.parquet")
    return folder


def test_calls_time_per_output_token(tmp_path):
    from cato_report.call_tpot import call_tpot

    calls = [
        ("a", 1.0, 1.4, 5, "ok"),  # 0.4 s over 4 gaps: 0.1
        ("b", 1.0, 1.6, 4, "ok"),  # 0.2
        ("c", 2.0, 2.9, 10, "ok"),  # 0.1
        ("c", 3.0, 3.0, 1, "ok"),  # one token: no gap to time
        ("d", 1.0, 1.5, 6, "failed"),  # not ended ok
    ]
    run = write_calls(tmp_path / "sim", TASK_ROWS["sim"], calls)
    got = call_tpot(
        run / "nodes.parquet", pa.Table.from_pylist([{"task_id": r[0], "task_type": r[1]} for r in TASK_ROWS["sim"]])
    )
    # three calls, TPOT 0.1, 0.2, 0.1: P50 0.1, P95 0.1 + 0.9 * 0.1
    assert got["overall"] == {"calls": 3, "tpot_p50": pytest.approx(0.1), "tpot_p95": pytest.approx(0.19)}
    assert got["by_task_type"]["gen"] == {"calls": 2, "tpot_p50": pytest.approx(0.15), "tpot_p95": pytest.approx(0.195)}
    assert got["by_task_type"]["sum"] == {"calls": 1, "tpot_p50": pytest.approx(0.1), "tpot_p95": pytest.approx(0.1)}


def test_fidelity_compares_the_calls_tpot(tmp_path):
    sim = write_calls(tmp_path / "sim", TASK_ROWS["sim"], [("a", 0.0, 0.3, 4, "ok"), ("c", 0.0, 0.2, 3, "ok")])
    live = write_calls(tmp_path / "live", TASK_ROWS["live"], [("a", 0.0, 0.6, 4, "ok"), ("c", 0.0, 0.1, 3, "ok")])
    live2 = write_calls(tmp_path / "live2", TASK_ROWS["live"], [("a", 0.0, 0.3, 4, "ok")])
    report = fidelity(sim, live, live2)
    # sim 0.1 and 0.1; live 0.2 and 0.05 (P50 0.125, P95 0.05 + 0.95 * 0.15); live2 0.1 alone
    all_ = report["calls"]["overall"]
    assert all_["calls"] == {"sim": 2, "live": 2, "live2": 1}
    assert all_["tpot_p50"] == pytest.approx(
        {"sim": 0.1, "live": 0.125, "rel_err": -0.2, "live2": 0.1, "live_spread": -0.2}
    )
    gen = report["calls"]["by_task_type"]["gen"]["tpot_p50"]
    assert gen == pytest.approx({"sim": 0.1, "live": 0.2, "rel_err": -0.5, "live2": 0.1, "live_spread": -0.5})
    assert report["calls"]["by_task_type"]["sum"]["tpot_p50"]["live2"] is None  # live2 ran no call of it
    md = fidelity_markdown(report, {})
    assert "| all | 2 | 100.0 ms | 125.0 ms | -20.0% | 100.0 ms | 192.5 ms | -48.1% | -20.0% / -48.1% |" in md
