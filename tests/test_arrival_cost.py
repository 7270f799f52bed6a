"""What an arriving prompt costs a decoding batch, measured and modelled, worked by hand (the
profiler's arrival part and bench/arrival_cost.py run it against a real vLLM)."""

from __future__ import annotations

import pytest

from cato_live.profiling.measure import extra_per_arrival
from cato_profiles.fit import MeasuredSteps, fit_frontend_cpu, modelled_arrival_s
from tests.conftest import round_profile


def test_extra_engine_time_per_arrival():
    # 100 steps of 3.3 ms where they took 3.0 ms without arrivals: 30 ms over 10 arrivals
    assert extra_per_arrival(0.0033, 0.003, 100, 10) == pytest.approx(0.003)


def test_the_model_charges_an_arrival_one_mixed_step():
    prof = round_profile(per_seq_s=0.002, prefill_attn_s=1e-6, decode_ctx_s=1e-5)
    # 4 decoders with 300 tokens of context, a 10-token prompt arrives: the step gains 10
    # tokens (10 ms), 100 units of attention (0.1 ms) and a fifth sequence (2 ms)
    assert modelled_arrival_s(prof, 4, 10, 300) == pytest.approx(0.0121)


def test_frontend_cpu_is_what_an_arrival_cost_beyond_its_mixed_step():
    prof = round_profile(per_seq_s=0.002, prefill_attn_s=1e-6, decode_ctx_s=1e-5)
    # the arrival row of 4 decoders and a 10-token prompt: T 14, A 100, C 300, S 5; it cost
    # 15 ms, of which the mixed step is 12.1 ms (above): 2.9 ms is the front end's
    steps = MeasuredSteps(["decode", "arrival"], [4, 14], [0.0, 100.0], [300.0, 300.0], [4, 5], [0.01, 0.015])
    front, measured, mixed = fit_frontend_cpu(prof, steps)
    assert (front, measured, mixed) == pytest.approx((0.0029, 0.015, 0.0121))
    # an arrival that cost less than its mixed step leaves the front end at 0, not below
    cheap = MeasuredSteps(["arrival"], [14], [100.0], [300.0], [5], [0.01])
    assert fit_frontend_cpu(prof, cheap)[0] == 0.0
    assert fit_frontend_cpu(prof, MeasuredSteps(["decode"], [4], [0.0], [300.0], [4], [0.01])) is None
