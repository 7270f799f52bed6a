"""`cato-live replay` against the emulator (EmulatorProvisioner-started subprocesses).

The same replay and checks as against vLLM (test_replay_vllm.check_complete_run), then the
emulator's timings as the replayer measures them, against the profile: tasks spaced far
apart each run alone, so an LLM node's TTFT (sent -> first token, at the client) is
prefill_s(prompt) x time scale, late by at most LATE_S. The replayer's client (aiohttp,
asyncio) adds about 2-7 ms per request on this 2-core machine on top of the emulator's own
1-2 ms (see test_emulator), so LATE_S = 50 ms on prefills stretched to about 0.1 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cato_core.profile import load_profile
from cato_traces.files import write_trace

from .test_emulator import PROFILE, Emulators
from .test_replay_vllm import check_complete_run, poisson_trace, run_replay

pytestmark = pytest.mark.live
SLOW = 10.0  # time scale of the "slow" emulator
LATE_S = 0.050


@pytest.fixture(scope="module")
def emulators(tmp_path_factory):
    from cato_live.provisioners.emulator import EmulatorSpec

    emus = Emulators(
        {"emu": EmulatorSpec(profile=PROFILE), "slow": EmulatorSpec(profile=PROFILE, time_scale=SLOW)},
        log_dir=str(tmp_path_factory.mktemp("emulator-logs")),
    )
    try:
        emus.start("emu", "emu-1")
        emus.start("slow", "slow-1")
        yield emus
    finally:
        emus.close()


def test_replay_emulator_every_task_ok_and_exact(emulators, tmp_path):
    trace = poisson_trace(20, rate=4.0, seed=11)
    write_trace(trace, tmp_path / "trace.parquet")
    target = emulators.handles["emu-1"].base_url
    res = run_replay(
        tmp_path / "trace.parquet", "--target", target, "--out", tmp_path / "out", "--profile", PROFILE, "--seed", 2
    )
    assert res.returncode == 0, res.stderr
    check_complete_run(trace, tmp_path / "out", target, "emu")


def test_replay_emulator_isolated_ttft_is_the_profiles_prefill(emulators, tmp_path):
    """Generation tasks 1.2 s apart (each alone: the longest, 1024 + 4 tokens, takes 0.9 s),
    prompts 16-1024 tokens: every node's TTFT at the client is prefill_s x SLOW, late by at
    most LATE_S; --limit keeps the first 6 of 8; --time-scale 0.5 halves the gaps."""
    prompts = [16, 64, 128, 256, 512, 1024, 8, 8]
    trace = pd.DataFrame(
        {
            "task_id": [f"g{i}" for i in range(8)],
            "arrival_s": np.arange(8) * 2.4,
            "task_type": "generation",
            "prompt_tokens": prompts,
            "output_tokens": 4,
        }
    )
    write_trace(trace, tmp_path / "trace.parquet")
    target = emulators.handles["slow-1"].base_url
    res = run_replay(
        tmp_path / "trace.parquet", "--target", target, "--out", tmp_path / "out", "--limit", 6, "--time-scale", 0.5
    )
    assert res.returncode == 0, res.stderr
    kept = trace.iloc[:6]
    _tasks, nodes, _, _ = check_complete_run(kept, tmp_path / "out", target, "slow", time_scale=0.5)
    prof = load_profile(PROFILE)
    llm = nodes.set_index("task_id").loc[kept["task_id"]]
    expect = np.array([prof.prefill_s(p) * SLOW for p in kept["prompt_tokens"]])
    got = (llm["first_token_s"] - llm["queued_s"]).to_numpy()
    assert (got >= expect).all() and (got <= expect + LATE_S).all(), list(zip(got, expect, strict=True))
    e2e_expect = np.array([(prof.prefill_s(p) + prof.decode_s(p, 4)) * SLOW for p in kept["prompt_tokens"]])
    e2e = (llm["end_s"] - llm["queued_s"]).to_numpy()
    assert (e2e >= e2e_expect).all() and (e2e <= e2e_expect + LATE_S).all(), list(zip(e2e, e2e_expect, strict=True))


def test_replay_emulator_http_errors_and_timeouts(emulators, tmp_path):
    """A model the server does not have: every task failed with the HTTP status and body
    excerpt; a per-request limit shorter than the (slow) emulator's prefill: every task
    timeout. Both exit 1, with every task in tasks.parquet once."""
    trace = poisson_trace(6, rate=20.0, seed=1)
    write_trace(trace, tmp_path / "trace.parquet")
    res = run_replay(
        tmp_path / "trace.parquet",
        "--target",
        emulators.handles["emu-1"].base_url,
        "--out",
        tmp_path / "a",
        "--model",
        "nope",
    )
    assert res.returncode == 1, res.stderr
    tasks = pd.read_parquet(tmp_path / "a" / "tasks.parquet")
    assert sorted(tasks["task_id"]) == sorted(trace["task_id"]) and set(tasks["status"]) == {"failed"}
    assert tasks["error"].str.startswith("node llm: HTTP 404: ").all()
    assert tasks["error"].str.contains("The model `nope` does not exist").all()

    res = run_replay(
        tmp_path / "trace.parquet",
        "--target",
        emulators.handles["slow-1"].base_url,
        "--out",
        tmp_path / "b",
        "--timeout-s",
        0.05,
    )  # prefills take >= 0.09 s here
    assert res.returncode == 1, res.stderr
    tasks = pd.read_parquet(tmp_path / "b" / "tasks.parquet")
    nodes = pd.read_parquet(tmp_path / "b" / "nodes.parquet")
    assert sorted(tasks["task_id"]) == sorted(trace["task_id"]) and set(tasks["status"]) == {"timeout"}
    assert (tasks["error"] == "node llm: no complete response within 0.05 s").all()
    assert set(nodes.loc[nodes["kind"] == "llm", "status"]) == {"timeout"}
