"""`cato-sim` end to end: outputs of a run, and one clear line with exit 2 for bad input."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from cato_sim.cli import app
from tests.conftest import ROOT

SMALL = ["--set", "trace.generate.duration_s=10"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_run_writes_tables_summary_plots_per_setup(tmp_path):
    res = invoke("run", ROOT / "experiments/quickstart.yaml", "--out", tmp_path, "--seed", 7, *SMALL)
    assert res.exit_code == 0, res.output
    trace = pd.read_parquet(tmp_path / "trace.parquet")
    for setup in ("cato", "rayserve", "round_robin"):
        d = tmp_path / setup
        tasks = pd.read_parquet(d / "tasks.parquet")
        assert sorted(tasks["task_id"]) == sorted(trace["task_id"])
        assert (d / "nodes.parquet").is_file() and (d / "replicas.parquet").is_file()
        s = json.loads((d / "summary.json").read_text())
        assert s["seed"] == 7 and s["setup"] == setup
        assert s["config"]["trace"]["generate"]["duration_s"] == 10  # the resolved config
        assert {"simpy", "python", "cato"} <= set(s["versions"])
        assert s["goodput_rate"] == pytest.approx(tasks["met"].mean())
        for t, fig in s["by_task_type"].items():
            assert set(fig) >= {
                "tasks",
                "goodput_rate",
                "ttft_p50",
                "ttft_p95",
                "ttft_p99",
                "e2e_p50",
                "e2e_p95",
                "e2e_p99",
            }
            assert fig["tasks"] == (tasks["task_type"] == t).sum()
        # the router's wait predictions against the waits, over the LLM calls that ran
        nodes = pd.read_parquet(d / "nodes.parquet")
        ran = nodes[(nodes["kind"] == "llm") & nodes["wait_s"].notna() & nodes["predicted_wait_s"].notna()]
        err = (ran["predicted_wait_s"] - ran["wait_s"]).abs()
        assert s["wait_prediction"] == {
            "median_abs_err_s": pytest.approx(err.median()),
            "median_abs_rel_err": pytest.approx((err / ran["wait_s"].clip(lower=0.01)).median()),
            "calls": len(ran),
        }
        assert len(ran) == (nodes["kind"] == "llm").sum() > 0
    for png in ("goodput.png", "latency_p95.png", "replicas.png"):
        assert (tmp_path / "plots" / png).stat().st_size > 1000
    assert "Goodput rate" in res.stdout


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


EXP = """
trace: {path: trace.parquet}
models: {m: {profile: codellama-7b_a100, replicas: 1}}
setups: [{name: a, router: cato}]
"""


def bad_inputs(tmp_path):
    good_trace = pd.DataFrame(
        {"task_id": ["a"], "arrival_s": [0.0], "task_type": ["completion"], "prompt_tokens": [10], "output_tokens": [5]}
    )
    good_trace.drop(columns=["output_tokens"]).to_parquet(tmp_path / "nocol.parquet")
    good_trace.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    return {
        "malformed yaml": (write(tmp_path, "bad.yaml", "trace: [unclosed\n"), "bad.yaml", "line"),
        "unknown policy": (
            write(tmp_path, "pol.yaml", EXP.replace("router: cato", "router: fastest")),
            "pol.yaml",
            "router",
        ),
        "negative rate": (
            write(tmp_path, "neg.yaml", EXP.replace("{path: trace.parquet}", "{generate: {rate: -2, duration_s: 5}}")),
            "neg.yaml",
            "rate",
        ),
        "missing file": (tmp_path / "nope.yaml", "nope.yaml", "experiment"),
        "missing trace": (write(tmp_path, "mt.yaml", EXP), "trace.parquet", "trace"),
        "missing column": (
            write(tmp_path, "mc.yaml", EXP.replace("trace.parquet", "nocol.parquet")),
            "nocol.parquet",
            "output_tokens",
        ),
        "empty trace": (
            write(tmp_path, "em.yaml", EXP.replace("trace.parquet", "empty.parquet")),
            "empty.parquet",
            "rows",
        ),
        "unknown profile": (write(tmp_path, "pr.yaml", EXP.replace("codellama-7b_a100", "gpt-9")), "gpt-9", "profile"),
        "bad policy parameter": (
            write(
                tmp_path,
                "pp.yaml",
                EXP.replace("router: cato}", "router: cato, scaler: fixed, scaler_params: {min_replicas: 2}}"),
            ),
            "pp.yaml",
            "scaler_params.min_replicas",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "malformed yaml",
        "unknown policy",
        "negative rate",
        "missing file",
        "missing trace",
        "missing column",
        "empty trace",
        "unknown profile",
        "bad policy parameter",
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    path, names_file, names_field = bad_inputs(tmp_path)[case]
    res = invoke("run", path, "--out", tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output
    assert names_file in lines[0] and names_field in lines[0]


def test_bad_set_override_and_trace_generate_errors(tmp_path):
    res = invoke("run", ROOT / "experiments/quickstart.yaml", "--set", "nokey")
    assert res.exit_code == 2 and "key=value" in res.output
    res = invoke("trace", "generate", "--out", tmp_path / "t.parquet", "--rate", "-1", "--num-tasks", 3)
    assert res.exit_code == 2 and "rate" in res.output


def test_console_script_runs_as_a_process(tmp_path):
    """The installed entry point, in a real process: no traceback on bad input."""
    proc = subprocess.run(
        [sys.executable, "-m", "cato_sim", "run", str(tmp_path / "x.yaml")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'x.yaml'}: experiment: an existing YAML file"


def test_trace_generate_writes_a_readable_trace(tmp_path):
    from cato_traces.files import read_trace

    out = tmp_path / "t.parquet"
    res = invoke(
        "trace",
        "generate",
        "--out",
        out,
        "--rate",
        2,
        "--num-tasks",
        50,
        "--seed",
        3,
        "--mix",
        "completion=1,translation=3",
    )
    assert res.exit_code == 0, res.output
    df = read_trace(out)
    assert len(df) == 50 and set(df["task_type"]) <= {"completion", "translation"}


# Files that are not YAML text: one line naming the file and what it should be, exit code 2.
NOT_TEXT = {
    "random bytes": random.Random(0).randbytes(4096),
    "utf-16 with a BOM": "trace: {path: t.parquet}\n".encode("utf-16"),
    "png header": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
    "elf header": b"\x7fELF\x02\x01\x01\x00" + bytes(56),
}


def run_module(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def assert_one_line_exit_2(proc, names):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(names) in lines[0], proc.stderr
    return lines[0]


@pytest.mark.parametrize("kind", list(NOT_TEXT))
def test_run_on_a_file_that_is_not_text(tmp_path, kind):
    path = tmp_path / "x.yaml"
    path.write_bytes(NOT_TEXT[kind])
    line = assert_one_line_exit_2(run_module("cato_sim", "run", path, "--out", tmp_path / "out"), path)
    assert "experiment: a UTF-8 YAML text file (byte 0x" in line


def test_run_on_a_directory(tmp_path):
    line = assert_one_line_exit_2(run_module("cato_sim", "run", tmp_path, "--out", tmp_path / "out"), tmp_path)
    assert line.endswith("experiment: a YAML file, not a directory")


def test_run_with_a_profile_that_is_a_binary_file(tmp_path):
    (tmp_path / "prof.png").write_bytes(NOT_TEXT["png header"])
    exp = write(
        tmp_path,
        "e.yaml",
        EXP.replace("{path: trace.parquet}", "{generate: {rate: 1, duration_s: 5}}").replace(
            "codellama-7b_a100", "prof.png"
        ),
    )
    line = assert_one_line_exit_2(run_module("cato_sim", "run", exp, "--out", tmp_path / "out"), "prof.png")
    assert "byte 0x89 at offset 0 is not UTF-8" in line


def test_a_utf8_bom_is_fine(tmp_path):
    from cato_core.yaml_file import read_yaml

    p = tmp_path / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read_yaml(p, "experiment") == {"a": 1}


@pytest.mark.parametrize("kind", ["random bytes", "png header"])
def test_live_commands_on_a_binary_deploy_file(tmp_path, kind):
    deploy = tmp_path / "DEPLOY.yaml"
    deploy.write_bytes(NOT_TEXT[kind])
    for args in (["serve", deploy], ["replay", tmp_path / "t.parquet", "--out", tmp_path / "out", "--deploy", deploy]):
        line = assert_one_line_exit_2(run_module("cato_live", *args), deploy)
        assert "deploy: a UTF-8 YAML text file (byte 0x" in line


def test_run_with_no_plots_writes_no_plots_folder(tmp_path):
    res = invoke("run", ROOT / "experiments/quickstart.yaml", "--out", tmp_path, "--no-plots", *SMALL)
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "plots").exists()
    assert (tmp_path / "cato" / "summary.json").is_file() and "Goodput rate" in res.stdout


def test_the_cli_and_a_run_without_plots_never_import_matplotlib(tmp_path):
    """Start-up time: matplotlib is loaded by plotting only (and pandas not by the CLI module)."""
    code = f"""
import sys
import cato_sim.cli
assert not {{"matplotlib", "pandas"}} & set(sys.modules), sorted(sys.modules)
try:
    cato_sim.cli.app(["run", {str(ROOT / "experiments/quickstart.yaml")!r}, "--out", {str(tmp_path)!r},
                      "--no-plots", *{SMALL!r}])
except SystemExit as e:
    assert e.code == 0, e.code
assert "matplotlib" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cato" / "tasks.parquet").is_file()


def test_plots_are_drawn_in_the_calling_process_where_no_worker_can_start(tmp_path, monkeypatch):
    import cato_report.plot_worker as plot_worker

    def no_processes(*_a, **_k):
        raise OSError("no semaphores here")

    monkeypatch.setattr(plot_worker, "ProcessPoolExecutor", no_processes)
    with plot_worker.PlotWorker() as worker:
        assert worker._pool is None
        res = invoke("run", ROOT / "experiments/quickstart.yaml", "--out", tmp_path / "run", "--no-plots", *SMALL)
        assert res.exit_code == 0, res.output
        summaries = {n: json.loads((tmp_path / "run" / n / "summary.json").read_text()) for n in ("cato", "rayserve")}
        runs = {n: tmp_path / "run" / n for n in summaries}
        written = worker.plot_comparison(runs, summaries, tmp_path / "plots")
    assert [p.name for p in written] == ["goodput.png", "latency_p95.png", "replicas.png"]
    assert all(p.stat().st_size > 1000 for p in written)
