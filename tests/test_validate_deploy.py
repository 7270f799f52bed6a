"""`cato-live validate`'s inputs: the DEPLOY -> Experiment mapping, --profile, and bad input.

The mapping is checked field by field and then simulated (real SimPy) on a small trace; bad
input goes through the command in a subprocess: exit 2 and one line, no traceback. A replica
that never becomes ready is a live failure: exit 1 with its log's tail.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from cato_core.errors import InputError
from cato_core.profile import load_profile
from cato_live.deploy import load_deploy, parse_deploy
from cato_sim.runner import run_experiment
from cato_traces.files import write_trace
from cato_traces.generate import generate_trace
from cato_validate.deploy_experiment import experiment_from_deploy, with_tools
from cato_validate.profile_override import override_profile, without_gateway_latency
from tests.conftest import ROOT

TINY = {
    "name": "tiny-cpu",
    "model": "cato-tiny",
    "device": "x86 CPU core",
    "overhead_s": 0.003,
    "per_token_s": 0.0001,
    "prefill_attn_s": 0.0,
    "decode_ctx_s": 0.0,
    "kv_capacity_tokens": 100000,
    "cold_start_s": 30.0,
}
MIX = {"completion": 1, "generation": 1, "summarization": 1, "translation": 1}


def deploy_tree(python: str = "/nonexistent/python", **over) -> dict:
    t = {
        "router": "pow2",
        "router_params": {"max_ongoing_requests": 4},
        "scaler": "cato",
        "scaler_params": {"window_s": 1.0, "max_replicas": 3},
        "seed": 5,
        "models": {
            "tiny": {"profile": TINY, "served_model": "cato-tiny", "replicas": 2, "max_num_seqs": 6},
            "other": {"profile": "codellama-7b_a100", "replicas": 1, "max_num_seqs": 16},
        },
        "task_types": {"summarization": {"model": "other"}},
        "tools": {"validate": 0.2},
        "provisioner": {
            "kind": "process",
            "python": python,
            "devices": [0, 1, 2, 3],
            "models": {
                "tiny": {
                    "path": "/models/tiny",
                    "args": ["--max-num-batched-tokens", "512", "--no-enable-chunked-prefill"],
                },
                "other": {"path": "/models/other", "args": ["--max-num-batched-tokens=4096"]},
            },
        },
    }
    t.update(over)
    return t


def test_experiment_from_deploy_maps_every_field(tmp_path):
    d = parse_deploy(deploy_tree(), "d.yaml")
    exp = experiment_from_deploy(d, tmp_path / "trace.parquet", 9, tmp_path / "profiles", max_replicas=4)
    assert exp.name == "validate-d" and exp.seed == 9
    assert exp.trace.path == str((tmp_path / "trace.parquet").resolve())
    assert exp.default_model == "tiny"
    tiny, other = exp.models["tiny"], exp.models["other"]
    assert (tiny.replicas, tiny.max_num_seqs, tiny.max_num_batched_tokens, tiny.chunked_prefill) == (2, 6, 512, False)
    assert (other.replicas, other.max_num_seqs, other.max_num_batched_tokens, other.chunked_prefill) == (
        1,
        16,
        4096,
        True,
    )
    assert tiny.kv_capacity_tokens is None  # the profile's
    assert load_profile(tiny.profile) == d.profile("tiny")
    assert load_profile(other.profile) == load_profile("codellama-7b_a100")
    (setup,) = exp.setups
    assert (setup.router, setup.scaler) == ("pow2", "cato")
    assert setup.router_params == {"max_ongoing_requests": 4}
    assert setup.scaler_params == {"window_s": 1.0, "max_replicas": 3}
    assert (exp.cluster.machines, exp.cluster.accelerators_per_machine) == (1, 4)
    assert exp.task_types["summarization"].model == "other"
    validate = exp.task_types["translation"].nodes[1]
    assert (validate.name, validate.tool.median_s, validate.tool.sigma) == ("validate", 0.2, 0.25)
    assert exp.task_types["completion"].nodes[0].tool.median_s == 0.05  # not in tools: the type's own
    # no known limit: the simulator's default cluster; never less than the initial replicas
    assert experiment_from_deploy(d, tmp_path / "t", 0, tmp_path / "p").cluster.accelerators_per_machine == 8
    assert experiment_from_deploy(d, tmp_path / "t", 0, tmp_path / "p", 1).cluster.accelerators_per_machine == 3


def test_the_mapped_experiment_simulates(tmp_path):
    d = parse_deploy(deploy_tree(), "d.yaml")
    write_trace(generate_trace(rate=5, num_tasks=24, mix=MIX, seed=1), tmp_path / "trace.parquet")
    exp = experiment_from_deploy(d, tmp_path / "trace.parquet", 1, tmp_path / "profiles", 4)
    (summary,) = run_experiment(exp, tmp_path, tmp_path / "sim", 1).values()
    assert summary["tasks"] == 24 and summary["config"]["setup"]["router"] == "pow2"
    nodes = pq.read_table(tmp_path / "sim" / "nodes.parquet", columns=["kind", "node", "model", "start_s", "end_s"])
    rows = nodes.to_pylist()
    assert {r["model"] for r in rows if r["kind"] == "llm"} == {"tiny", "other"}
    validates = [r["end_s"] - r["start_s"] for r in rows if r["node"] == "validate"]
    assert validates and all(0.05 < v < 0.8 for v in validates)  # around 0.2 s, not the type's 0.5


def test_with_tools_leaves_task_types_without_those_tools_alone():
    types = load_deploy(ROOT / "experiments/deploy/emulator.yaml").task_types
    assert with_tools(types, {}) == types
    assert with_tools(types, {"retrieve": 0.01})["completion"].nodes[0].tool.median_s == 0.01


def test_profile_override_by_served_name_or_key():
    d = parse_deploy(deploy_tree(), "d.yaml")
    p = dataclasses.replace(load_profile("codellama-7b_a100"), model="cato-tiny", overhead_s=0.001)
    o = override_profile(d, p, "p.yaml")
    assert o.profile("tiny") == p and o.profile("other") == d.profile("other")
    assert o.source == "d.yaml" and d.profile("tiny").overhead_s == 0.003  # the original is unchanged
    assert override_profile(d, dataclasses.replace(p, model="other"), "p.yaml").profile("other").overhead_s == 0.001
    with pytest.raises(InputError) as e:
        override_profile(d, load_profile("codellama-7b_a100"), "codellama-7b_a100")
    assert str(e.value) == (
        "codellama-7b_a100: model: one of the DEPLOY's models ['cato-tiny', 'other', 'tiny'] "
        "(got 'codellama/CodeLlama-7b-hf')"
    )


# -- the command --------------------------------------------------------------------------
def validate(*args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cato_live.cli", "validate", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )


@pytest.fixture
def files(tmp_path):
    write_trace(generate_trace(rate=5, num_tasks=12, mix=MIX, seed=2), tmp_path / "trace.parquet")
    # a "vLLM" that exits at once, as one on a host without its device would
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'fake replica: no device on this host' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    tree = deploy_tree(str(fake), scaler="fixed", scaler_params={})
    tree["models"]["tiny"]["replicas"] = 1
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump(tree))
    return tmp_path


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_a_task_type_the_deploy_cannot_serve_is_bad_input(files):
    tree = yaml.safe_load((files / "deploy.yaml").read_text())
    tree["task_types"]["translation"] = None
    tree["tools"] = {}  # its validate node went with it
    (files / "deploy.yaml").write_text(yaml.safe_dump(tree))
    line = one_error_line(validate(files / "trace.parquet", "--deploy", files / "deploy.yaml", "--out", files / "o"))
    assert line == (
        f"error: {files / 'trace.parquet'}: task_type: one of ['completion', 'generation', 'summarization'] "
        "(got 'translation')"
    )
    assert not (files / "o").exists()


def test_a_profile_for_another_model_is_bad_input(files):
    line = one_error_line(
        validate(
            files / "trace.parquet",
            "--deploy",
            files / "deploy.yaml",
            "--out",
            files / "o",
            "--profile",
            "starcoder2-7b_910b4",
        )
    )
    assert line.startswith(
        "error: starcoder2-7b_910b4: model: one of the DEPLOY's models ['cato-tiny', 'other', 'tiny']"
    )


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--profile", "no-such-profile"], "error: no-such-profile: profile: a profile file or one of"),
        (["--seed", "-1"], "error: --seed: -1: an integer >= 0"),
        (["--target", "ftp://host"], "error: --target: ftp://host: an http:// or https:// URL"),
    ],
)
def test_bad_options(files, args, expected):
    line = one_error_line(
        validate(files / "trace.parquet", "--deploy", files / "deploy.yaml", "--out", files / "o", *args)
    )
    assert line.startswith(expected)


def test_unset_provisioner_variable_is_bad_input_before_anything_runs(files):
    tree = yaml.safe_load((files / "deploy.yaml").read_text())
    tree["provisioner"]["python"] = "${CATO_TEST_UNSET_VAR}"
    (files / "deploy.yaml").write_text(yaml.safe_dump(tree))
    line = one_error_line(validate(files / "trace.parquet", "--deploy", files / "deploy.yaml", "--out", files / "o"))
    assert line.startswith(f"error: {files / 'deploy.yaml'}: provisioner.python: set environment variables")
    assert not (files / "o").exists()


def test_replicas_that_never_become_ready_end_with_their_log_tail(files):
    p = validate(files / "trace.parquet", "--deploy", files / "deploy.yaml", "--out", files / "o")
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert f"error: {files / 'deploy.yaml'}: live run: replica " in p.stderr
    assert "did not start" in p.stderr and "fake replica: no device on this host" in p.stderr
    assert (files / "o" / "sim" / "summary.json").is_file()  # the simulation had run
    assert not (files / "o" / "fidelity.json").exists()


def test_a_target_that_serves_nothing_ends_the_run(files):
    from cato_live.provisioners.child_process import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    p = validate(files / "trace.parquet", "--deploy", files / "deploy.yaml", "--out", files / "o", "--target", url)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert (
        p.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: --target {url}: live run: no task succeeded (node llm: ClientConnectorError: Cannot connect"
        )
    )
    assert (files / "o" / "live" / "tasks.parquet").is_file()  # every task is there, failed
    assert not (files / "o" / "fidelity.json").exists()


def test_without_gateway_latency_zeroes_every_profile_and_nothing_else():
    d = parse_deploy(deploy_tree(), "d.yaml")
    d = override_profile(d, dataclasses.replace(d.profile("tiny"), gateway_latency_s=0.002), "p.yaml")
    o = without_gateway_latency(d)
    assert d.profile("tiny").gateway_latency_s == 0.002  # the original is unchanged
    for m in d.models:
        assert o.profile(m) == dataclasses.replace(d.profile(m), gateway_latency_s=0.0)
    assert o.models["tiny"].max_num_seqs == 6 and o.source == "d.yaml"
