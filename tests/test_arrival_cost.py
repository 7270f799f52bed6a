"""bench/arrival_cost.py's arithmetic, worked by hand (the bench itself runs a real vLLM)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import round_profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from arrival_cost import extra_per_arrival, modelled_per_arrival


def test_extra_engine_time_per_arrival():
    # 100 steps of 3.3 ms where they took 3.0 ms without arrivals: 30 ms over 10 arrivals
    assert extra_per_arrival(0.0033, 0.003, 100, 10) == pytest.approx(0.003)
    assert extra_per_arrival(0.0033, 0.003, 100, 0) is None


def test_the_model_charges_an_arrival_one_mixed_step():
    prof = round_profile(per_seq_s=0.002, prefill_attn_s=1e-6, decode_ctx_s=1e-5)
    # 4 decoders with 300 tokens of context, a 10-token prompt arrives: the step gains 10
    # tokens (10 ms), 100 units of attention (0.1 ms) and a fifth sequence (2 ms)
    assert modelled_per_arrival(prof, 4, 10, 300) == pytest.approx(0.0121)
