"""bench/live_ab.py's table and headline, on constructed fidelity reports (exact strings)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import live_ab


def fig(live, sim):
    return {"live": live, "sim": sim}


def report(goodput_live, goodput_sim, ttft_p50=0.020):
    group = {
        "goodput_rate": fig(goodput_live, goodput_sim),
        "ttft_p50": fig(ttft_p50, 0.010),
        "ttft_p95": fig(0.050, None),
        "e2e_p50": fig(0.400, 0.380),
        "e2e_p95": fig(1.2346, 1.0),
    }
    return {"overall": group, "by_task_type": {"completion": group}}


def test_headline_names_the_strongest_baseline_by_live_goodput():
    reports = {
        "cato": report(0.95, 0.99),
        "rayserve_llm": report(0.90, 0.97),
        "round_robin": report(0.92, 0.96),
    }
    assert live_ab.headline(reports) == (
        "Goodput live: cato 95.0% vs strongest baseline round_robin (CATO gateway, round robin) 92.0%: "
        "+3.0 pts; simulated: 99.0% vs 96.0%: +3.0 pts"
    )


def test_headline_needs_cato_and_a_baseline():
    assert live_ab.headline({"cato": report(0.9, 0.9)}) == ""
    assert live_ab.headline({"round_robin": report(0.9, 0.9)}) == ""


def test_table_rows_per_task_type_and_side_live_then_sim():
    lines = live_ab.table({"cato": report(0.95, 0.99), "rayserve_llm": report(0.5, 0.625)})
    assert lines[2:] == [
        "| all | cato | 95.0% / 99.0% | 20 / 10 | 50 / - | 400 / 380 | 1235 / 1000 |",
        "| all | rayserve_llm | 50.0% / 62.5% | 20 / 10 | 50 / - | 400 / 380 | 1235 / 1000 |",
        "| completion | cato | 95.0% / 99.0% | 20 / 10 | 50 / - | 400 / 380 | 1235 / 1000 |",
        "| completion | rayserve_llm | 50.0% / 62.5% | 20 / 10 | 50 / - | 400 / 380 | 1235 / 1000 |",
    ]
