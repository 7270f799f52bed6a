"""How fast an engine ran against its profile, from lone calls (cato_report.engine_speed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cato_core.profile import load_profile
from cato_core.results import NODES
from cato_report.engine_speed import engine_speed, lone
from cato_report.fidelity import fidelity
from cato_report.fidelity_markdown import fidelity_markdown
from tests.test_fidelity import TASK_ROWS, write_run

TINY = load_profile("cato-tiny_cpu")


def test_lone_calls_are_those_no_other_call_on_their_replica_overlaps():
    # replica 0: [0, 1] and [1, 2] touch (lone both); [3, 5] and [4, 6] overlap (neither);
    # [2.5, 2.6] sits in between (lone). Replica 1: [4, 6] alone there. Given out of order.
    replica = np.array([0, 1, 0, 0, 0, 0])
    start = np.array([4.0, 4.0, 1.0, 0.0, 3.0, 2.5])
    end = np.array([6.0, 6.0, 2.0, 1.0, 5.0, 2.6])
    assert lone(replica, start, end).tolist() == [False, True, True, True, False, True]


def test_a_call_inside_a_longer_one_makes_neither_lone():
    replica = np.zeros(3, dtype=int)
    # [0, 10] holds [2, 3]; [11, 12] comes after both
    assert lone(replica, np.array([0.0, 2.0, 11.0]), np.array([10.0, 3.0, 12.0])).tolist() == [False, False, True]


def call(replica, start, prompt, output, ttft_x, decode_x, status="ok", model="tiny"):
    """A call that ran ttft_x / decode_x times the profile's isolated times."""
    first = start + ttft_x * TINY.prefill_s(prompt)
    end = first + decode_x * TINY.decode_s(prompt, output)
    return {
        "task_id": f"t{start}",
        "node": "llm",
        "kind": "llm",
        "model": model,
        "replica": replica,
        "start_s": start,
        "first_token_s": first,
        "end_s": end,
        "prompt_tokens": prompt,
        "output_tokens": output,
        "status": status,
    }


def test_ratios_are_the_medians_over_lone_ok_calls_of_known_models(tmp_path):
    rows = [
        call("r1", 0.0, 64, 16, 2.0, 3.0),
        call("r1", 10.0, 300, 40, 2.0, 3.0),
        call("r1", 20.0, 32, 1, 4.0, 1.0),  # one token: a TTFT ratio (4), no decode
        call("r2", 0.0, 64, 16, 9.0, 9.0),  # r2's two calls overlap: not counted
        call("r2", 0.001, 64, 16, 9.0, 9.0),
        call("r3", 0.0, 64, 16, 7.0, 7.0, status="failed"),  # not ok
        call("r4", 0.0, 64, 16, 7.0, 7.0, model="other"),  # no profile for its model
        call(None, 50.0, 64, 16, 7.0, 7.0),  # no replica known (a server the gateway did not route for)
        {"task_id": "t", "node": "tool", "kind": "tool", "start_s": 0.0, "end_s": 1.0, "status": "ok"},
    ]
    path = tmp_path / "nodes.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=NODES), path)
    speed = engine_speed(path, {"tiny": TINY})
    assert speed["lone_calls"] == 3
    assert speed["ttft_ratio"] == pytest.approx(2.0, rel=1e-12)  # median of 2, 2, 4
    assert speed["decode_ratio"] == pytest.approx(3.0, rel=1e-12)


def test_no_lone_call_gives_no_ratio(tmp_path):
    path = tmp_path / "nodes.parquet"
    rows = [call("r1", 0.0, 64, 16, 1.0, 1.0), call("r1", 0.001, 64, 16, 1.0, 1.0)]
    pq.write_table(pa.Table.from_pylist(rows, schema=NODES), path)
    assert engine_speed(path, {"tiny": TINY}) == {"lone_calls": 0, "ttft_ratio": None, "decode_ratio": None}


def test_a_simulated_engine_runs_at_its_profiles_speed(tmp_path):
    from typer.testing import CliRunner

    from cato_sim.cli import app
    from tests.conftest import ROOT

    # the Azure code trace on 4 replicas: bursts, and gaps where calls run alone
    args = ["run", str(ROOT / "experiments/azure_code_4.yaml"), "--out", str(tmp_path), "--no-plots"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    speed = engine_speed(tmp_path / "nodes.parquet", {"codellama-7b": load_profile("codellama-7b_a100")})
    assert speed["lone_calls"] > 0
    assert speed["ttft_ratio"] == pytest.approx(1.0, rel=1e-9)
    assert speed["decode_ratio"] == pytest.approx(1.0, rel=1e-9)


def test_the_fidelity_report_gives_each_sides_speed(tmp_path):
    nodes = {"sim": [call("r1", 0.0, 64, 16, 1.0, 1.0)], "live": [call("r1", 0.0, 64, 16, 1.5, 1.25)]}
    dirs = {}
    for side in ("sim", "live"):
        dirs[side] = write_run(tmp_path / side, TASK_ROWS[side], [])
        pq.write_table(pa.Table.from_pylist(nodes[side], schema=NODES), dirs[side] / "nodes.parquet")
    report = fidelity(dirs["sim"], dirs["live"], profiles={"tiny": TINY})
    assert report["engine_speed"]["live"] == {"lone_calls": 1, "ttft_ratio": pytest.approx(1.5), "decode_ratio": 1.25}
    md = fidelity_markdown(report, {})
    assert "| live | 1 | x1.50 | x1.25 |" in md
    assert "engine_speed" not in fidelity(dirs["sim"], dirs["live"])  # no profiles, no figure


def test_a_run_at_the_live_engines_speed_is_compared_with_live_too(tmp_path):
    # The at-speed run holds the sim's tasks: its rows against live are the sim's rows.
    dirs = {side: write_run(tmp_path / side, TASK_ROWS[side], []) for side in ("sim", "live")}
    at = write_run(tmp_path / "at", TASK_ROWS["sim"], [])
    for d, x in ((dirs["sim"], 1.0), (dirs["live"], 1.5), (at, 1.5)):
        pq.write_table(pa.Table.from_pylist([call("r1", 0.0, 64, 16, x, x)], schema=NODES), d / "nodes.parquet")
    report = fidelity(dirs["sim"], dirs["live"], profiles={"tiny": TINY}, at_live_speed=at)
    assert report["at_live_speed"]["overall"] == report["overall"]
    assert report["at_live_speed"]["by_task_type"] == report["by_task_type"]
    assert report["engine_speed"]["sim_at_live_speed"]["decode_ratio"] == pytest.approx(1.5)
    md = fidelity_markdown(report, {})
    at_speed = md[md.index("At the live engine's speed") :]
    assert "engines x1.50 the profile's times" in at_speed
    assert "| all | TTFT P50 | 250.0 ms | 200.0 ms | +25.0% | ±10% | **no** |" in at_speed
    assert "| sim_at_live_speed | 1 | x1.50 | x1.50 |" in md
