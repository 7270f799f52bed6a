import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cato_core.errors import InputError
from cato_core.tasks import default_task_types
from cato_traces.files import read_trace
from cato_traces.generate import LENGTHS, Z99, Dist, fit_lognormal, generate_trace, sample_lengths, save_trace
from cato_traces.prompts import TOKEN_MEANS, estimate_tokens, load_pools

MIX = {"completion": 1, "generation": 1, "summarization": 1, "translation": 1}


def gen(**kw):
    args = dict(rate=2.0, num_tasks=500, mix=MIX, seed=7)
    args.update(kw)
    return generate_trace(**args)


def test_types_match_core():
    assert set(LENGTHS) == set(default_task_types()) == set(TOKEN_MEANS)


def test_schema_and_ids():
    df = gen(num_tasks=3)
    assert list(df.columns) == ["task_id", "arrival_s", "task_type", "prompt_tokens", "output_tokens"]
    assert list(df["task_id"]) == ["t000001", "t000002", "t000003"]
    assert df["prompt_tokens"].dtype == np.int64 and df["output_tokens"].dtype == np.int64


def test_determinism():
    pd.testing.assert_frame_equal(gen(), gen())
    assert not gen().equals(gen(seed=8))
    # The mix's key order is not part of the draw.
    pd.testing.assert_frame_equal(gen(), gen(mix=dict(reversed(list(MIX.items())))))


def test_count_and_duration():
    assert len(gen(num_tasks=123)) == 123
    df = gen(num_tasks=None, duration_s=600.0, rate=3.0)
    assert df["arrival_s"].max() < 600 and df["arrival_s"].min() > 0
    assert df["arrival_s"].is_monotonic_increasing
    assert abs(len(df) - 1800) < 5 * math.sqrt(1800)  # Poisson count: sd = sqrt(mean)


def test_arrival_rate():
    df = gen(num_tasks=20_000, rate=2.5)
    gaps = np.diff(np.concatenate([[0.0], df["arrival_s"].to_numpy()]))
    # Exponential gaps: sd of the mean is 0.4/sqrt(20000) = 0.7% of 0.4, so 3% is > 4 sd.
    assert abs(gaps.mean() / 0.4 - 1) < 0.03
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05  # CV of an exponential is 1


def test_mix_proportions():
    mix = {"completion": 3, "generation": 1, "translation": 0}
    df = gen(num_tasks=20_000, mix=mix)
    share = df["task_type"].value_counts(normalize=True)
    assert set(share.index) == {"completion", "generation"}
    assert abs(share["completion"] - 0.75) < 0.015  # sd 0.3%


def test_fit_lognormal_by_hand():
    # mu = 0, sigma = 1: mean = e^0.5, p99 = e^z; the smaller root is z - |z - 1| = 1.
    mu, s = fit_lognormal(math.exp(0.5), math.exp(Z99))
    assert mu == pytest.approx(0, abs=1e-12) and s == pytest.approx(1, abs=1e-12)
    # CONCODE input 220 / 884: ln(884/220) = 1.39083, z^2 = 5.41189,
    # s = 2.32635 - sqrt(5.41189 - 2.78166) = 2.32635 - 1.62180 = 0.70455.
    mu, s = fit_lognormal(220, 884)
    assert s == pytest.approx(0.70455, abs=1e-5) and mu == pytest.approx(math.log(220) - s * s / 2)


@given(st.floats(1, 1e4), st.floats(1.01, 14.9))
def test_fit_lognormal_recovers(mean, ratio):
    mu, s = fit_lognormal(mean, mean * ratio)
    assert math.exp(mu + s * s / 2) == pytest.approx(mean, rel=1e-9)
    assert math.exp(mu + Z99 * s) == pytest.approx(mean * ratio, rel=1e-9)


def test_fit_lognormal_rejects_impossible():
    for p99 in (10, 5, 1000):  # p99 <= mean, or beyond exp(z^2/2) ~ 15 x the mean
        with pytest.raises(InputError):
            fit_lognormal(10, p99)


def test_sampled_moments_follow_fit():
    rng = np.random.default_rng(0)
    x = sample_lengths(Dist(220, 884, 1, 10**9), 400_000, rng)
    assert abs(x.mean() / 220 - 1) < 0.01
    assert abs(np.percentile(x, 99) / 884 - 1) < 0.03


def test_lengths_within_bounds():
    df = gen(num_tasks=50_000)
    for t, g in df.groupby("task_type"):
        for col, key in (("prompt_tokens", "prompt"), ("output_tokens", "output")):
            d = LENGTHS[t][key]
            assert g[col].between(d.lo, d.hi).all(), (t, col)
    # Narrow ranges are truncated by redrawing, so the lower bound gets no spike of mass.
    gen_out = df.loc[df["task_type"] == "generation", "output_tokens"]
    assert (gen_out == 50).mean() < 0.05


def test_round_trip(tmp_path):
    df = gen()
    save_trace(df, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_trace(tmp_path / "t.parquet", set(LENGTHS)), df, check_dtype=False)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(rate=-1.0), "rate"),
        (dict(rate=0), "rate"),
        (dict(mix={"refactor": 1}), "mix"),
        (dict(mix={"completion": 0}), "mix"),
        (dict(mix={"completion": -1}), "mix.completion"),
        (dict(duration_s=10.0), "duration_s"),  # both given
        (dict(num_tasks=0), "num_tasks"),
        (dict(seed=-1), "seed"),
        (dict(lengths="azure"), "lengths"),
        (dict(with_prompt=True), "with_prompt"),  # only prompt mode has text
    ],
)
def test_input_errors(kw, field):
    with pytest.raises(InputError) as e:
        gen(**kw)
    assert e.value.field == field


def test_pool_calibration():
    for t, pool in load_pools().items():
        assert 2.5 < pool.chars_per_token < 4.5, t
        if t != "completion":  # completion's items are prefixes; its calibration is on whole prompts
            assert pool.tokens.mean() == pytest.approx(TOKEN_MEANS[t], rel=0.01), t


def test_prompt_mode():
    df = gen(num_tasks=2000, lengths="prompts", with_prompt=True)
    pools = load_pools()
    assert df["prompt"].str.strip().str.len().gt(0).all()
    for t, g in df.groupby("task_type"):
        est = estimate_tokens(list(g["prompt"]), pools[t].chars_per_token)
        assert (est == g["prompt_tokens"].to_numpy()).all(), t
    # Completion prompts are HumanEval prefixes cut after a whole line.
    assert df.loc[df["task_type"] == "completion", "prompt"].str.endswith("\n").all()
    pd.testing.assert_frame_equal(df.drop(columns="prompt"), gen(num_tasks=2000, lengths="prompts"))
