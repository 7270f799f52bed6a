"""`cato-live validate` on real vLLM (CPU build, tiny local model): simulated vs live.

A Poisson trace of all four task types (40 tasks at 8/s; prompts 8-64 tokens, outputs 4-16)
is simulated with the shipped measured profile (cato_profiles/cato-tiny_cpu.yaml) and
replayed twice through the in-process gateway on two vLLM replicas
(experiments/deploy/process_cpu.yaml, one core each). Checked: fidelity.json has every key
with finite figures within generous bounds, every task is once in each run's tasks.parquet,
fidelity.md and the plots exist. Skipped unless CATO_VLLM_PYTHON and CATO_TINY_MODEL are set.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from cato_traces.generate import generate_trace

from .conftest import ROOT

pytestmark = pytest.mark.live
MIX = {"completion": 1, "generation": 1, "summarization": 1, "translation": 1}
LATENCY = ("ttft_p50", "ttft_p95", "e2e_p50", "e2e_p95")


def small_trace(path) -> list[str]:
    """40 generated tasks with lengths clipped short (the tiny model on one core each)."""
    df = generate_trace(rate=8, num_tasks=40, mix=MIX, seed=7)
    t = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    for col, hi in (("prompt_tokens", 64), ("output_tokens", 16)):
        t = t.set_column(t.schema.get_field_index(col), col, pc.max_element_wise(pc.min_element_wise(t[col], hi), 4))
    pq.write_table(t, path)
    assert set(t["task_type"].to_pylist()) == set(MIX)
    return t["task_id"].to_pylist()


@pytest.fixture(scope="module")
def validated(vllm_python, tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validate")
    ids = small_trace(tmp / "trace.parquet")
    deploy = yaml.safe_load((ROOT / "experiments/deploy/process_cpu.yaml").read_text())
    deploy["provisioner"].update(
        python=vllm_python,
        log_dir=str(tmp / "vllm"),
        ready_timeout_s=float(os.environ.get("CATO_VLLM_READY_TIMEOUT", "180")),
    )
    deploy["provisioner"]["models"]["tiny"]["path"] = tiny_model_dir
    (tmp / "deploy.yaml").write_text(yaml.safe_dump(deploy))
    out = tmp / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "cato_live.cli", "validate", str(tmp / "trace.parquet")]
        + ["--deploy", str(tmp / "deploy.yaml"), "--out", str(out), "--repeat-live", "--seed", "3"]
        + ["--profile", "cato-tiny_cpu"],  # the shipped profile measured on vLLM's CPU build
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, ids, proc


def finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_fidelity_json_has_every_figure_finite_and_within_bounds(validated):
    out, ids, _ = validated
    report = json.loads((out / "fidelity.json").read_text())
    groups = {"overall": report["overall"], **report["by_task_type"]}
    assert set(report["by_task_type"]) == set(MIX)
    for name, g in groups.items():
        for key in LATENCY:
            row = g[key]
            assert {"sim", "live", "rel_err", "live2", "live_spread", "within_2x_spread"} <= set(row), (name, key)
            assert all(finite(row[k]) for k in ("sim", "live", "rel_err", "live2", "live_spread")), (name, key, row)
            assert abs(row["rel_err"]) < 5 and abs(row["live_spread"]) < 5, (name, key, row)
            assert row["rel_err"] == pytest.approx(row["sim"] / row["live"] - 1)
        row = g["goodput_rate"]
        assert all(finite(row[k]) for k in ("sim", "live", "abs_err", "live2", "live_spread")), (name, row)
        assert 0 <= row["sim"] <= 1 and 0 <= row["live"] <= 1
        assert row["abs_err"] == pytest.approx(row["sim"] - row["live"])
    calls = report["calls"]["overall"]  # the calls' decode speed (TPOT): every call ran on each side
    assert calls["calls"]["sim"] == calls["calls"]["live"] == calls["calls"]["live2"] > 0
    for key in ("tpot_p50", "tpot_p95"):
        row = calls[key]
        assert all(finite(row[k]) for k in ("sim", "live", "rel_err", "live2", "live_spread")), (key, row)
        assert 0 < row["live"] < 1 and abs(row["rel_err"]) < 5, (key, row)
    for side in ("sim", "live", "live2"):
        w = report["wait_prediction"][side]
        assert set(w) == {"median_abs_err_s", "median_abs_rel_err", "calls"}
        assert w["calls"] == len(ids)  # one LLM node a task in the default task types
        assert finite(w["median_abs_err_s"]) and finite(w["median_abs_rel_err"])
        assert 0 <= w["median_abs_err_s"] < 5
    for side in ("sim", "live", "live2"):  # how fast each engine ran against the profile, from lone calls
        e = report["engine_speed"][side]
        assert set(e) == {"lone_calls", "ttft_ratio", "decode_ratio"} and e["lone_calls"] >= 0
        assert all(e[k] is None or (finite(e[k]) and 0 < e[k] < 20) for k in ("ttft_ratio", "decode_ratio")), e
        if side == "sim" and e["lone_calls"]:
            assert e["ttft_ratio"] == pytest.approx(1.0) and e["decode_ratio"] in (None, pytest.approx(1.0))
    live = report["engine_speed"]["live"]
    if live["lone_calls"] >= 3 and live["decode_ratio"] is not None:  # simulated again at the live engine's speed
        assert (out / "sim_at_live_speed" / "tasks.parquet").is_file()
        assert set(report["at_live_speed"]["by_task_type"]) == set(MIX)
        for key in LATENCY:
            row = report["at_live_speed"]["overall"][key]
            assert finite(row["rel_err"]) and abs(row["rel_err"]) < 5, (key, row)
        at = report["engine_speed"]["sim_at_live_speed"]
        if at["decode_ratio"] is not None:  # its lone calls decode exactly that much slower than profiled
            assert at["decode_ratio"] == pytest.approx(live["decode_ratio"], rel=1e-6)
    else:
        assert "at_live_speed" not in report and not (out / "sim_at_live_speed").exists()
    v = report["verdict"]
    assert isinstance(v["sim_within_2x_live_spread"], bool) and v["rows_checked"] == 5 * (1 + len(MIX))
    assert report["inputs"]["seed"] == 3 and report["inputs"]["tasks"] == len(ids)
    assert report["inputs"]["profile"] == "cato-tiny_cpu"
    assert report["inputs"]["profiles"]["tiny"]["request_latency_s"] > 0  # the measured one, on both sides


def test_every_task_once_on_each_side_all_ok(validated):
    out, ids, _ = validated
    for side in ("sim", "live", "live2", "sim_at_live_speed"):
        if not (out / side).exists():  # no speed to simulate at: too few lone calls live
            continue
        t = pq.read_table(out / side / "tasks.parquet", columns=["task_id", "status"])
        assert sorted(t["task_id"].to_pylist()) == sorted(ids), side
        assert set(t["status"].to_pylist()) == {"ok"}, side


def test_report_and_plots_written(validated):
    out, _, proc = validated
    md = (out / "fidelity.md").read_text()
    assert "P50 within 10%" in md and "| all | TTFT P50 |" in md and "within 2x spread" in md
    assert "Engine speed against the profile" in md
    assert md in proc.stdout
    for name in ("cdf_ttft", "cdf_e2e", "wait_prediction", "replicas_over_time"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 10_000, name
    assert "Traceback" not in proc.stderr
