"""`cato-live profile` against a real vLLM (CPU build) serving the tiny model, started by the
DEPLOY's process provisioner: a loadable measured profile; bad input; a replica that never
starts; Ctrl-C while it starts. Skipped unless CATO_VLLM_PYTHON and CATO_TINY_MODEL are set.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from cato_core.profile import load_profile

from .conftest import ROOT, SERVED_NAME
from .processes import descendants, gone

pytestmark = pytest.mark.live

DEPLOY = ROOT / "experiments/deploy/process_cpu.yaml"
BUDGET_S = 180  # the limit for the whole command on the tiny model


def profile_command(*args) -> list[str]:
    """`cato-live profile` (the console script's entry point, without needing it installed)."""
    return [sys.executable, "-c", "from cato_live.cli import main; main()", "profile", *map(str, args)]


def env(vllm_python: str, model_dir: str) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
        "CATO_VLLM_PYTHON": vllm_python,
        "CATO_TINY_MODEL": model_dir,
    }


def one_replica_deploy(tmp_path, model_path: str) -> str:
    """process_cpu.yaml with one core and the model folder given."""
    tree = yaml.safe_load(DEPLOY.read_text())
    tree["provisioner"]["devices"] = [0]
    tree["provisioner"]["ready_timeout_s"] = 60
    tree["provisioner"]["models"]["tiny"]["path"] = model_path
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def test_profile_writes_a_measured_loadable_profile(vllm_python, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "p.yaml"
    t0 = time.monotonic()
    res = subprocess.run(
        profile_command(DEPLOY, "--model", "tiny", "--out", out),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUDGET_S + 60,
        env=env(vllm_python, tiny_model_dir),
    )
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    prof = load_profile(out)
    assert prof.estimate is False and prof.model == SERVED_NAME and prof.name == "p"
    coefficients = (
        "overhead_s",
        "per_token_s",
        "linear_floor_s",
        "prefill_attn_s",
        "decode_ctx_s",
        "request_latency_s",
        "frontend_cpu_s",
    )
    assert all(math.isfinite(getattr(prof, f)) and getattr(prof, f) >= 0 for f in coefficients)
    # every step costs something; a lone TTFT carries the API path's latency on top
    assert prof.step_s(1, 0, 0, 1) > 0 and prof.request_latency_s > 0
    # long prompts cost more than short ones: per token or attention
    assert prof.per_token_s > 0 or prof.prefill_attn_s > 0
    assert prof.prefill_s(1024) > prof.prefill_s(16)
    assert 1 < prof.cold_start_s < BUDGET_S and prof.kv_capacity_tokens > 0
    # the arrival part was measured and gave the front end's share of the engine's core
    assert "Medians, arrival: n=4 p=64 at 10/s" in prof.provenance
    assert "frontend_cpu_s: an arriving prompt cost the decoding batch" in prof.provenance
    for words in ("Grid:", "Residuals", "prefill rms", "decode rms", "mixed rms", "vLLM", "cold_start_s: measured"):
        assert words in prof.provenance, words
    assert "cato-live profile" in out.read_text().splitlines()[3]
    assert took < BUDGET_S, f"took {took:.0f} s"
    with capsys.disabled():
        print(f"\n[live] cato-live profile took {took:.0f} s; {res.stderr.strip().splitlines()[-1]}")


def test_unknown_model_is_one_line_and_exit_2(tmp_path):
    res = subprocess.run(
        profile_command(DEPLOY, "--model", "gpt-9", "--out", tmp_path / "p.yaml"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {DEPLOY}: models: "), res.stderr
    assert "gpt-9" in lines[0] and not (tmp_path / "p.yaml").exists()


def test_replica_that_never_starts_reports_its_log(vllm_python, tiny_model_dir, tmp_path):
    deploy = one_replica_deploy(tmp_path, str(tmp_path / "no-such-model"))
    res = subprocess.run(
        profile_command(deploy, "--model", "tiny", "--out", tmp_path / "p.yaml"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env(vllm_python, tiny_model_dir),
    )
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback (most recent call last)" not in res.stderr.split("log ")[0]  # ours; the log's own may have one
    assert "error: replica profile-0 of 'tiny' did not start: vLLM exited" in res.stderr
    assert "no-such-model" in res.stderr  # the log tail names what went wrong
    assert not (tmp_path / "p.yaml").exists()


def test_ctrl_c_while_the_replica_starts_stops_it(vllm_python, tiny_model_dir, tmp_path):
    deploy = one_replica_deploy(tmp_path, tiny_model_dir)
    proc = subprocess.Popen(
        profile_command(deploy, "--model", "tiny", "--out", tmp_path / "p.yaml"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(vllm_python, tiny_model_dir),
    )
    try:
        seen: dict[int, int] = {}
        end = time.monotonic() + 30
        while time.monotonic() < end and len(seen) < 2:  # the server and its engine core
            seen.update(descendants(proc.pid))
            time.sleep(0.5)
        assert seen, "no vLLM process appeared"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert all(gone(pid, start) for pid, start in seen.items())
    assert not (tmp_path / "p.yaml").exists()
