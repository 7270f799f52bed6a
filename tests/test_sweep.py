"""`cato-sim sweep`: plan, parallel runs (processes and Ray), result files, plots, failures.

Each sweep here is tiny (traces of a few seconds): the whole module takes well under a
minute on two cores, most of it starting worker processes and a local Ray instance.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cato_core.errors import InputError
from cato_report import sweep_plots as sp
from cato_sim.cli import app
from cato_sim.experiment import Experiment, load_experiment
from cato_sim.runner import build_trace
from cato_sim.sweep import (
    BUILTIN_POLICIES,
    COLUMNS,
    KEYS,
    WALL_COLUMNS,
    collect,
    jobs_of,
    plan_sweep,
    resolve_policies,
    run_dir,
    run_seed,
    run_sweep,
)
from cato_traces.generate import generate_trace, save_trace

RATES = [1.0, 3.0]
POLICIES = ["cato", "round_robin"]
SEEDS = 2
TYPES = ["completion", "generation", "summarization", "translation"]

EXPERIMENT = {
    "name": "tiny",
    "seed": 7,
    "trace": {"generate": {"rate": 2.0, "duration_s": 6}},
    "models": {"codellama-7b": {"profile": "codellama-7b_910b4", "replicas": 2, "max_num_seqs": 16}},
    "setups": [
        {"name": "cato", "router": "cato", "scaler": "fixed"},
        {"name": "round_robin", "router": "round_robin", "scaler": "fixed"},
    ],
}


@pytest.fixture(scope="module")
def exp_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("exp") / "tiny.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def serial(exp_file, tmp_path_factory):
    """The reference sweep: one worker, in this process."""
    exp, base = load_experiment(exp_file)
    out = tmp_path_factory.mktemp("serial")
    return run_sweep(exp, base, out, POLICIES, RATES, SEEDS, workers=1)


def results(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=WALL_COLUMNS)


def test_one_row_per_run_and_task_type(serial):
    f = serial.frame
    assert serial.failures == []
    assert len(f) == len(RATES) * len(POLICIES) * SEEDS * len(TYPES) == 32
    assert list(f.columns) == COLUMNS
    assert not f.duplicated(KEYS).any()
    assert list(f["policy"].unique()) == POLICIES  # sorted in the order asked for
    assert sorted(f["rate"].unique()) == RATES and sorted(f["seed"].unique()) == [0, 1]
    assert sorted(f["task_type"].unique()) == TYPES
    assert f.equals(
        f.sort_values(["rate", "seed", "task_type"]).sort_values(
            "policy", key=lambda c: c.map(POLICIES.index), kind="stable"
        )
    )
    assert set(f["run_seed"]) == {run_seed(7, 0), run_seed(7, 1)}
    # per type figures add up to the run's
    per_run = f.groupby(["policy", "rate", "seed"]).agg(tasks=("tasks", "sum"), all_tasks=("all_tasks", "first"))
    assert (per_run["tasks"] == per_run["all_tasks"]).all()
    assert f["goodput_rate"].between(0, 1).all() and f["utilization"].between(0, 1).all()
    assert (f.loc[f["policy"] == "cato", "router"] == "cato").all()
    # every run has its own folder with the runner's files
    for rel in f["run_dir"].unique():
        for name in ("tasks.parquet", "replicas.parquet", "summary.json"):
            assert (serial.out / rel / name).is_file()
    assert json.loads((serial.out / "failures.json").read_text()) == []
    assert pd.read_parquet(serial.out / "sweep.parquet").equals(f)


def test_policies_compare_on_identical_traces(serial):
    def tasks(policy, rate, seed):
        t = pd.read_parquet(serial.out / run_dir(policy, rate, seed) / "tasks.parquet")
        return t.sort_values("task_id").reset_index(drop=True)  # written in completion order

    a, b = tasks("cato", 3.0, 1), tasks("round_robin", 3.0, 1)
    cols = ["task_id", "task_type", "arrival_s", "sla_s"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert not tasks("cato", 3.0, 0)[["arrival_s"]].equals(a[["arrival_s"]])  # seeds differ
    # the arrival rate reaches the trace
    f = sp.runs(serial.frame)
    assert f.groupby("rate")["all_tasks"].mean()[3.0] > 2 * f.groupby("rate")["all_tasks"].mean()[1.0]


def test_results_do_not_depend_on_worker_count(serial, exp_file, tmp_path):
    exp, base = load_experiment(exp_file)
    two = run_sweep(exp, base, tmp_path, POLICIES, RATES, SEEDS, workers=2)
    pd.testing.assert_frame_equal(results(two.frame), results(serial.frame))
    rel = run_dir("round_robin", 3.0, 1)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / rel / "tasks.parquet"), pd.read_parquet(serial.out / rel / "tasks.parquet")
    )


def test_ray_local_sweep_matches_local_processes(serial, exp_file, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]')")
    exp, base = load_experiment(exp_file)
    on_ray = run_sweep(exp, base, tmp_path, POLICIES, RATES, SEEDS, workers=2, ray_address="local")
    assert on_ray.failures == []
    pd.testing.assert_frame_equal(results(on_ray.frame), results(serial.frame))


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(exp_file, tmp_path, monkeypatch):
    import cato_sim.runner

    real = cato_sim.runner.run_setup

    def flaky(exp, setup, trace, out, seed, *a, **kw):
        if setup.name == "round_robin" and exp.trace.generate.rate == 3.0:
            raise RuntimeError("injected failure")
        return real(exp, setup, trace, out, seed, *a, **kw)

    monkeypatch.setattr(cato_sim.runner, "run_setup", flaky)  # reaches the runs: one worker, in-process
    res = CliRunner().invoke(
        app,
        [
            "sweep",
            str(exp_file),
            "--rates",
            "1,3",
            "--policies",
            "cato,round_robin",
            "--seeds",
            "2",
            "--workers",
            "1",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 1, res.output
    failures = json.loads((tmp_path / "failures.json").read_text())
    assert [(f["policy"], f["rate"], f["seed"], f["error"]) for f in failures] == [
        ("round_robin", 3.0, 0, "RuntimeError: injected failure"),
        ("round_robin", 3.0, 1, "RuntimeError: injected failure"),
    ]
    assert (
        "injected failure" in json.loads((tmp_path / failures[0]["run_dir"] / "failure.json").read_text())["traceback"]
    )
    frame = pd.read_parquet(tmp_path / "sweep.parquet")
    assert len(frame) == (2 * 2 * 2 - 2) * len(TYPES)
    assert not ((frame["policy"] == "round_robin") & (frame["rate"] == 3.0)).any()
    assert (tmp_path / "plots" / "goodput_vs_rate.png").is_file()
    assert "injected failure" in res.output and "2 run(s) failed" in res.output


def test_a_run_failing_in_a_worker_process_is_recorded(exp_file, tmp_path):
    # at 0.001 tasks/s no task arrives within 0.5 s: generating that trace fails in the run
    exp, base = load_experiment(exp_file, ["trace.generate.duration_s=0.5"])
    result = run_sweep(exp, base, tmp_path, ["cato"], [0.001, 40.0], 2, workers=2)
    assert [(f["rate"], f["seed"]) for f in result.failures] == [(0.001, 0), (0.001, 1)]
    assert all("one arrival" in f["error"] for f in result.failures)
    assert set(result.frame["rate"]) == {40.0} and len(result.frame) == 2 * len(TYPES)


def test_plots_and_table_are_rebuilt_from_the_files_alone(serial, tmp_path):
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(serial.out, copy)
    shutil.rmtree(copy / "plots", ignore_errors=True)
    (copy / "sweep.parquet").unlink()
    res = CliRunner().invoke(app, ["sweep", "--plots-only", "--out", str(copy)])
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(pd.read_parquet(copy / "sweep.parquet"), serial.frame)
    names = {"goodput_vs_rate.png", "latency_p95_vs_rate.png", "utilization_vs_rate.png", "replicas_over_time.png"}
    assert {p.name for p in (copy / "plots").iterdir()} == names
    assert "Goodput rate" in res.output and "round_robin" in res.output


def test_cli_sweep_writes_everything(exp_file, tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "sweep",
            str(exp_file),
            "--rates",
            "2",
            "--policies",
            "rayserve",
            "--seeds",
            "1",
            "--workers",
            "1",
            "--out",
            str(tmp_path),
            "--set",
            "trace.generate.duration_s=4",
        ],
    )
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(tmp_path / "sweep.parquet")
    assert len(frame) == len(TYPES) and set(frame["scaler"]) == {"rayserve"}  # the built-in
    assert len(list((tmp_path / "plots").glob("*.png"))) == 4
    plan = json.loads((tmp_path / "sweep.json").read_text())
    assert plan["experiment_config"]["trace"]["generate"]["duration_s"] == 4


@pytest.mark.parametrize(
    "extra",
    [
        ["--rates", "1,x"],
        ["--rates", "0"],
        ["--rates", "1,1.0"],
        ["--policies", "nope"],
        ["--seeds", "0"],
        ["--workers", "0"],
        ["--set", "trace.generate.rate=-1"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(exp_file, tmp_path, extra):
    opts = {"--rates": "1", "--policies": "cato", "--seeds": "1", **dict(zip(extra[::2], extra[1::2], strict=True))}
    res = CliRunner().invoke(
        app, ["sweep", str(exp_file), "--out", str(tmp_path), *[x for kv in opts.items() for x in kv]]
    )
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_ray_address_without_ray_is_an_input_error(exp_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    res = CliRunner().invoke(
        app,
        [
            "sweep",
            str(exp_file),
            "--rates",
            "1",
            "--policies",
            "cato",
            "--ray-address",
            "local",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 2 and "ray" in res.output


def test_unreachable_ray_address_fails_fast(exp_file, tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "sweep",
            str(exp_file),
            "--rates",
            "1",
            "--policies",
            "cato",
            "--ray-address",
            "127.0.0.1:1",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 2 and "--ray-address" in res.output, res.output


def test_builtin_policies_and_precedence(exp_file):
    exp, _ = load_experiment(exp_file)
    cato, rr, ray = resolve_policies(exp, ["cato", "round_robin", "rayserve"])
    assert (cato.router, cato.scaler) == ("cato", "fixed")  # the experiment's set-up wins
    assert (rr.router, rr.scaler) == ("round_robin", "fixed")
    assert (ray.router, ray.scaler) == ("pow2", "rayserve") == (BUILTIN_POLICIES["rayserve"]["router"], "rayserve")
    with pytest.raises(InputError):
        resolve_policies(exp, ["cato", "cato"])
    with pytest.raises(InputError):
        resolve_policies(exp, ["cato", "nope"])


def test_path_trace_is_time_scaled_to_the_rate(tmp_path):
    trace = generate_trace(rate=2.0, num_tasks=200, mix={"completion": 1, "translation": 1}, seed=3)
    save_trace(trace, tmp_path / "t.parquet")
    tree = {**EXPERIMENT, "trace": {"path": "t.parquet", "time_scale": 5.0}, "setups": EXPERIMENT["setups"][:1]}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(tree))
    exp, base = load_experiment(tmp_path / "e.yaml")
    plan = plan_sweep(exp, base, ["cato"], [1.0, 8.0], 2)
    assert plan["task_types"] == ["completion", "translation"] and plan["rate_mode"] == "time_scale"
    t = trace["arrival_s"]
    assert plan["trace_mean_rate"] == pytest.approx((len(t) - 1) / (t.max() - t.min()))
    for job in jobs_of(plan, tmp_path / "out"):
        scaled = build_trace(Experiment.model_validate(job["experiment"]), Path(job["base_dir"]), job["run_seed"])
        a = scaled["arrival_s"]
        assert (len(a) - 1) / (a.max() - a.min()) == pytest.approx(job["rate"])


def test_run_seeds_are_deterministic_and_distinct():
    assert run_seed(7, 0) == run_seed(7, 0)
    assert len({run_seed(s, i) for s in range(3) for i in range(50)}) == 150


def test_band_is_the_95_percent_ci_of_the_mean_over_seeds():
    f = pd.DataFrame({"policy": ["a"] * 4 + ["b"], "rate": [1.0] * 5, "x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    b = sp.band(f, "x")
    a = b.iloc[0]
    half = 3.182 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert (a["mean"], a["n"]) == (2.5, 4)
    assert a["lo"] == pytest.approx(2.5 - half) and a["hi"] == pytest.approx(2.5 + half)
    assert (b.iloc[1]["lo"], b.iloc[1]["hi"]) == (5.0, 5.0)  # one seed: no band


def test_collect_needs_a_sweep_folder(tmp_path):
    with pytest.raises(InputError):
        collect(tmp_path)


def test_presets_name_the_ray_serve_baselines_and_params_override_them():
    from cato_sim.experiment import Setup

    llm = Setup.model_validate({"name": "x", "preset": "rayserve_llm"})
    assert (llm.router, llm.scaler) == ("pow2", "rayserve")
    assert llm.router_params == {"max_ongoing_requests": 10**9}
    assert llm.scaler_params == {"target_ongoing_requests": 10**9, "min_replicas": None}
    ex = Setup.model_validate({"name": "x", "preset": "rayserve_vllm_example", "scaler_params": {"max_replicas": 4}})
    assert ex.router_params == {"max_ongoing_requests": 10}
    assert ex.scaler_params == {"target_ongoing_requests": 5, "min_replicas": 1, "max_replicas": 4}
    fixed = Setup.model_validate({"name": "x", "preset": "rayserve", "scaler": "fixed"})  # another scaler: its params
    assert (fixed.router_params, fixed.scaler, fixed.scaler_params) == ({"max_ongoing_requests": 5}, "fixed", {})
    with pytest.raises(ValueError, match="unknown preset 'ray'"):
        Setup.model_validate({"name": "x", "preset": "ray"})
    assert set(BUILTIN_POLICIES) >= {"rayserve", "rayserve_llm", "rayserve_vllm_example"}
