"""DeviceProfile step times, with and without a floor on the linear part, worked by hand.

Profiles: overhead 10 ms + 1 ms a token, optionally floored at 20 ms (the line reaches the
floor at T = 10); attention 1 us per unit of A; decode 10 us per context token; PER_SEQ adds
2 ms per sequence given a token (S).
"""

import dataclasses

import pytest
import yaml

from cato_core.errors import InputError
from cato_core.profile import DeviceProfile, load_profile, save_profile, shipped_profiles
from tests.conftest import round_profile

FLOORED = round_profile(linear_floor_s=0.02, prefill_attn_s=1e-6, decode_ctx_s=1e-5)
PLAIN = round_profile(prefill_attn_s=1e-6, decode_ctx_s=1e-5)
PER_SEQ = round_profile(linear_floor_s=0.02, per_seq_s=0.002, prefill_attn_s=1e-6, decode_ctx_s=1e-5)


def exact(x):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def test_floor_defaults_to_zero_and_must_not_be_negative(tmp_path, profile_file):
    assert round_profile().linear_floor_s == 0.0
    with pytest.raises(ValueError, match="linear_floor_s"):
        round_profile(linear_floor_s=-0.001)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**dataclasses.asdict(round_profile()), "linear_floor_s": -0.001}))
    with pytest.raises(InputError) as e:
        load_profile(bad)
    assert e.value.field == "linear_floor_s"
    assert load_profile(profile_file(linear_floor_s=0.02)).linear_floor_s == 0.02


def test_profile_without_the_field_loads_as_plain_line(tmp_path):
    data = dataclasses.asdict(round_profile())
    del data["linear_floor_s"]
    p = tmp_path / "old.yaml"
    p.write_text(yaml.safe_dump(data))
    prof = load_profile(p)
    assert prof.linear_floor_s == 0.0
    assert prof.step_s(5, 0, 0, 5) == 0.01 + 0.001 * 5  # bit for bit the plain line


def test_step_s():
    # decode step of 5 sequences: the line gives 15 ms, the floor 20 ms
    assert FLOORED.step_s(5, 0, 0, 5) == exact(0.02)
    assert PLAIN.step_s(5, 0, 0, 5) == exact(0.015)
    # 50 sequences: the line (60 ms) is above the floor
    assert FLOORED.step_s(50, 0, 0, 50) == exact(0.06)
    assert PLAIN.step_s(50, 0, 0, 50) == exact(0.06)
    # the two meet at T = 10; T = 1 is floored
    assert FLOORED.step_s(10, 0, 0, 10) == exact(0.02)
    assert FLOORED.step_s(1, 0, 0, 1) == exact(0.02)
    assert FLOORED.step_s(11, 0, 0, 11) == exact(0.021)
    # attention terms are added after the floor, never floored
    assert FLOORED.step_s(5, 100, 1000, 5) == exact(0.02 + 1e-6 * 100 + 1e-5 * 1000)  # 0.0301
    assert PLAIN.step_s(5, 100, 1000, 5) == exact(0.015 + 0.0001 + 0.01)


def test_prefill_s():
    # 5-token prompt: max(20, 15) ms + 25 us of attention
    assert FLOORED.prefill_s(5) == exact(0.020025)
    assert PLAIN.prefill_s(5) == exact(0.015025)
    # 100-token prompt: line 110 ms + 10000 us of attention, floor irrelevant
    assert FLOORED.prefill_s(100) == exact(0.12)
    assert PLAIN.prefill_s(100) == exact(0.12)


def test_decode_s():
    # p = 100, o = 11: 10 one-token steps, each max(20, 11) ms; contexts 101..110 = 1055 tokens
    assert FLOORED.decode_s(100, 11) == exact(10 * 0.02 + 1055 * 1e-5)  # 0.21055
    assert PLAIN.decode_s(100, 11) == exact(10 * 0.011 + 1055 * 1e-5)  # 0.12055
    assert FLOORED.decode_s(100, 1) == 0 and FLOORED.decode_s(100, 0) == 0
    for p in (0, 7, 300):
        for o in (1, 2, 3, 40):
            steps = sum(FLOORED.step_s(1, 0, p + j, 1) for j in range(1, o))
            assert FLOORED.decode_s(p, o) == exact(steps)


def test_decode_run_s():
    # 5 sequences, 1000 tokens of context, 3 steps: contexts 1000, 1005, 1010
    assert FLOORED.decode_run_s(5, 1000, 3) == exact(3 * 0.02 + 3015 * 1e-5)  # 0.09015
    assert PLAIN.decode_run_s(5, 1000, 3) == exact(3 * 0.015 + 3015 * 1e-5)  # 0.07515
    # 50 sequences: contexts 1000, 1050, 1100; line 60 ms above the floor
    assert FLOORED.decode_run_s(50, 1000, 3) == exact(3 * 0.06 + 3150 * 1e-5)  # 0.2115
    assert FLOORED.decode_run_s(5, 1000, 0) == 0
    for prof in (FLOORED, PLAIN, PER_SEQ):
        for n in (1, 5, 10, 11, 50):
            for k in (1, 2, 7, 30):
                steps = sum(prof.step_s(n, 0, 1000 + n * j, n) for j in range(k))
                assert prof.decode_run_s(n, 1000, k) == exact(steps)


def test_decode_steps_within_by_hand():
    # 5 sequences from 1000 tokens: steps end at 0.03, 0.06005, 0.09015
    assert FLOORED.decode_steps_within(5, 1000, 0) == 0
    assert FLOORED.decode_steps_within(5, 1000, 0.0299) == 0
    assert FLOORED.decode_steps_within(5, 1000, 0.03) == 1
    assert FLOORED.decode_steps_within(5, 1000, 0.09014) == 2
    assert FLOORED.decode_steps_within(5, 1000, 0.09015) == 3
    # unfloored, 15 ms lines: steps end at 0.025, 0.05005, 0.07515, 0.1003 (0.07515 + 0.02515)
    assert PLAIN.decode_steps_within(5, 1000, 0.09015) == 3
    assert PLAIN.decode_steps_within(5, 1000, 0.1002) == 3
    assert PLAIN.decode_steps_within(5, 1000, 0.1003) == 4
    # no KV term: whole floored steps of 20 ms
    flat = round_profile(linear_floor_s=0.02)
    assert flat.decode_steps_within(5, 1000, 0.0999) == 4
    assert flat.decode_steps_within(5, 1000, 0.1) == 5
    assert flat.decode_steps_within(5, 1000, -1.0) == 0


@pytest.mark.parametrize(
    "prof",
    [
        FLOORED,
        PLAIN,
        round_profile(linear_floor_s=0.02),
        round_profile(),
        *(load_profile(name) for name in shipped_profiles()),
    ],
    ids=lambda p: f"{p.name}-floor{p.linear_floor_s}-ctx{p.decode_ctx_s}",
)
def test_decode_steps_within_inverts_decode_run_s(prof):
    for n in (1, 3, 10, 64, 100, 256):
        for context in (0, 517, 100_000):
            for k in [*range(60), 99, 1000, 12_345]:
                elapsed = prof.decode_run_s(n, context, k)
                assert prof.decode_steps_within(n, context, elapsed) == k
                # the largest such k, and consistent just below the end of step k
                assert prof.decode_run_s(n, context, k + 1) > elapsed
                if k:
                    below = elapsed - 1e-9 * max(elapsed, 1.0)
                    assert prof.decode_steps_within(n, context, below) == k - 1


def test_shipped_profiles_are_floored():
    for name in shipped_profiles():
        prof = load_profile(name)
        if prof.provenance.startswith("Measured by `cato-live profile "):
            continue  # a floor is kept only where the device's own times show one
        assert prof.linear_floor_s > prof.overhead_s + prof.per_token_s  # a decode step of 1
        assert isinstance(prof, DeviceProfile)


def test_per_seq_s_is_paid_per_sequence_given_a_token_outside_the_floor():
    assert round_profile().per_seq_s == 0.0
    # decode of 5: floor 20 ms + 5 x 2 ms + 1000 context x 10 us
    assert PER_SEQ.step_s(5, 0, 1000, 5) == exact(0.02 + 0.01 + 0.01)
    # a 100-token prompt with 4 decoders: line 114 ms, 5 sequences get a token
    assert PER_SEQ.step_s(104, 10_000, 0, 5) == exact(0.114 + 0.01 + 0.01)
    # a lone prompt is one sequence: the prefill above plus 2 ms
    assert PER_SEQ.prefill_s(100) == exact(0.12 + 0.002)
    # p = 100, o = 11: 10 steps of floor 20 ms + 2 ms, contexts 101..110
    assert PER_SEQ.decode_s(100, 11) == exact(10 * 0.022 + 1055 * 1e-5)
    # 5 sequences from 1000 tokens: each step 20 + 10 ms plus its context
    assert PER_SEQ.decode_run_s(5, 1000, 3) == exact(3 * 0.03 + 3015 * 1e-5)
    assert PER_SEQ.decode_steps_within(5, 1000, 0.04) == 1  # the first step ends at 0.04
    assert PER_SEQ.decode_steps_within(5, 1000, 0.08005) == 2  # the second at 0.08005


def test_a_saved_profile_loads_back_equal(tmp_path):
    """Every field survives, the optional ones and the provenance's line breaks included."""
    prof = dataclasses.replace(
        PER_SEQ, request_latency_s=0.005, gateway_latency_s=0.0015, frontend_cpu_s=0.004, provenance="a\nb"
    )
    assert load_profile(save_profile(prof, tmp_path / "p.yaml")) == prof
    assert load_profile(save_profile(load_profile("codellama-7b_a100"), tmp_path / "c.yaml")) == load_profile(
        "codellama-7b_a100"
    )
