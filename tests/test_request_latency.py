"""The profile's request_latency_s in the simulator: clients see every token that much later,
while the engine's own steps (and who shares them) stay as they were."""

from __future__ import annotations

import pytest

from cato_core.profile import DeviceProfile
from tests.test_engine import run

LATENCY = 0.005


def test_latency_delays_first_token_and_end_of_a_lone_request(tmp_path, profile_file):
    tasks, _ = run(tmp_path, profile_file, [("a", 0.0, "gen", 100, 5)], profile={"request_latency_s": LATENCY})
    assert tasks.loc["a", "ttft_s"] == pytest.approx(0.11 + LATENCY)  # the round profile's prefill + latency
    assert tasks.loc["a", "e2e_s"] == pytest.approx(0.11 + 4 * 0.011 + LATENCY)


def test_latency_leaves_the_engine_steps_alone(tmp_path, profile_file):
    rows = [("a", 0.0, "gen", 100, 11), ("b", 0.15, "gen", 100, 3)]
    base, base_nodes = run(tmp_path / "0", profile_file, rows)
    late, late_nodes = run(tmp_path / "1", profile_file, rows, profile={"request_latency_s": LATENCY})
    assert list(late_nodes["start_s"]) == pytest.approx(list(base_nodes["start_s"]))  # same batching
    assert list(late["ttft_s"]) == pytest.approx(list(base["ttft_s"] + LATENCY))
    assert list(late["e2e_s"]) == pytest.approx(list(base["e2e_s"] + LATENCY))


def test_gateway_latency_adds_to_the_request_latency(tmp_path, profile_file):
    hop = 0.002
    tasks, _ = run(
        tmp_path,
        profile_file,
        [("a", 0.0, "gen", 100, 5)],
        profile={"request_latency_s": LATENCY, "gateway_latency_s": hop},
    )
    assert tasks.loc["a", "ttft_s"] == pytest.approx(0.11 + LATENCY + hop)
    assert tasks.loc["a", "e2e_s"] == pytest.approx(0.11 + 4 * 0.011 + LATENCY + hop)


def test_prefill_s_is_what_a_client_of_the_gateway_sees():
    p = DeviceProfile(
        name="r", model="m", device="d", overhead_s=0.01, per_token_s=0.001, prefill_attn_s=0.0,
        decode_ctx_s=0.0, kv_capacity_tokens=1000, cold_start_s=1.0, request_latency_s=0.005, gateway_latency_s=0.002,
    )  # fmt: skip
    assert p.client_latency_s == pytest.approx(0.007)
    assert p.prefill_s(100) == pytest.approx(0.01 + 0.1 + 0.007)  # the step, then both latencies
    assert p.decode_s(100, 5) == pytest.approx(4 * 0.011)  # token gaps: no latency in them
