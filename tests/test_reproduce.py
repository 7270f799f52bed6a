"""The reproduction report: claim arithmetic on constructed sweeps, and the whole command."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from cato_core.presets import presets
from cato_sim.cli import app
from cato_sim.reproduce import BASELINES, POLICIES, Figure, best_baseline, claims, paired, verdict, write_report


def sweep_frame(goodput: dict[str, list[float]], rate=2.0, utilization=None) -> pd.DataFrame:
    rows = []
    for policy, values in goodput.items():
        for seed, g in enumerate(values):
            for t in ("generation", "summarization"):
                rows.append(
                    {
                        "policy": policy,
                        "rate": rate,
                        "seed": seed,
                        "task_type": t,
                        "all_goodput_rate": g,
                        "utilization": (utilization or {}).get(policy, 0.5),
                        "ttft_p95": 1.0 if policy != "cato" else 0.8,
                        "e2e_p95": 2.0,
                    }
                )
    return pd.DataFrame(rows)


def test_paired_difference_against_the_best_baseline():
    frame = sweep_frame({"cato": [0.9, 0.8, 0.7], "rayserve": [0.6, 0.6, 0.6], "round_robin": [0.8, 0.7, 0.6]})
    fig, base = paired(frame, 2.0, "all_goodput_rate")
    assert base == "round_robin"  # mean 0.7 beats Ray's 0.6
    assert (fig.mean, fig.n) == (pytest.approx(0.1), 3)  # CATO - RR is 0.1 on every seed
    assert fig.lo == pytest.approx(0.1) and fig.hi == pytest.approx(0.1)
    rel, _ = paired(frame, 2.0, "ttft_p95", "generation", relative=True)
    assert rel.mean == pytest.approx(-0.2)  # 0.8 / 1.0 - 1


def test_every_preset_baseline_is_compared_and_the_strongest_named():
    assert sorted(BASELINES) == sorted(n for n in presets() if n != "cato")
    frame = sweep_frame(
        {"cato": [0.9, 0.9], "rayserve": [0.7, 0.7], "rayserve_llm": [0.8, 0.8], "round_robin": [0.8, 0.8]}
    )
    frame["replica_seconds"] = frame["policy"].map({"rayserve_llm": 90.0}).fillna(100.0)
    assert best_baseline(frame, 2.0) == "rayserve_llm"  # ties round robin on Goodput, fewer replica-seconds


@pytest.mark.parametrize(
    "fig, paper, expected",
    [
        (Figure(0.12, 0.05, 0.19, 5), 0.10, "yes"),
        (Figure(0.02, 0.01, 0.03, 5), 0.10, "direction only"),
        (Figure(0.02, -0.01, 0.05, 5), 0.10, "no"),
        (Figure(-0.20, -0.25, -0.15, 5), -0.18, "yes"),
        (Figure(-0.06, -0.20, 0.08, 5), -0.14, "no"),  # reaches the figure but crosses zero
    ],
)
def test_verdicts(fig, paper, expected):
    assert verdict(fig, paper) == expected


def test_claims_read_only_result_files(tmp_path):
    for name in ("all_tasks", "rq1"):
        (tmp_path / name).mkdir()
        sweep_frame(
            {"cato": [0.9, 0.8, 0.7], "rayserve": [0.6, 0.6, 0.6], "round_robin": [0.8, 0.7, 0.6]},
            utilization={"cato": 0.4, "rayserve": 0.5},
        ).to_parquet(tmp_path / name / "sweep.parquet")
    rows = claims(tmp_path)
    goodput = next(r for r in rows if r["claim"].startswith("All four types: Goodput"))
    assert goodput["holds"] == "yes" and goodput["ours"].startswith("+10.0%")
    util = next(r for r in rows if r["claim"].startswith("Moderate load"))
    assert util["holds"] == "direction only"
    report = write_report(tmp_path, tmp_path / "paper.md").read_text()
    assert "| Generation P95 TTFT -14% | SLA 3x | -14.0% | -20.0%" in report


def test_reproduce_command_end_to_end(tmp_path):
    out, report = tmp_path / "runs", tmp_path / "paper.md"
    small = ["--duration-s", "8", "--map-tasks", "20", "--workers", "2"]
    for axis in ("load=0.5,1.1", "sla=1.5,3", "cv=1", "slowdown=1"):
        small += ["--map-axis", axis]
    res = CliRunner().invoke(app, ["reproduce", "--seeds", "2", "--out", str(out), "--report", str(report), *small])
    assert res.exit_code == 0, res.output
    text = report.read_text()
    for name in ("rq1", "rq1_tight", "all_tasks", "all_tasks_tight", "coldstart", "azure"):
        assert f"### {name}:" in text and (out / name / "sweep.parquet").is_file()
        assert set(pd.read_parquet(out / name / "sweep.parquet")["policy"]) == set(POLICIES)
    for name in ("map_all_tasks", "map_rq1"):
        assert f"### {name}" in text and (out / name / "explore.parquet").is_file()
    assert text.count("| RQ1: CATO's Goodput gain grows") == 2
    assert text.count("(`map_all_tasks`) |") == 10 and text.count("(`map_rq1`) |") == 2
    # The report comes back identical from the files alone.
    before = text
    res = CliRunner().invoke(app, ["reproduce", "--report-only", "--out", str(out), "--report", str(report)])
    assert res.exit_code == 0 and report.read_text() == before
