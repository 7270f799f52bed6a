"""Gamma arrivals have the CV asked for; Poisson traces draw exactly as before gamma existed."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cato_core.errors import InputError
from cato_traces.generate import generate_trace

MIX = {"completion": 1, "generation": 2, "summarization": 1, "translation": 1}


def digest(df) -> str:
    h = hashlib.sha256()
    h.update(df["arrival_s"].to_numpy(np.float64).tobytes())
    for c in ("prompt_tokens", "output_tokens"):
        h.update(df[c].to_numpy(np.int64).tobytes())
    h.update("\n".join(df["task_id"] + ":" + df["task_type"]).encode())
    return h.hexdigest()


def test_poisson_traces_are_byte_identical_to_the_committed_generator():
    # digests of the same calls to cato_traces/generate.py before gamma arrivals were added
    assert digest(generate_trace(rate=3.0, num_tasks=400, mix=MIX, seed=11)) == (
        "43e6376f7013c4cb1e6283f4c1006d12d2bfc980d14763225553af9199a71f7a"
    )
    assert digest(generate_trace(rate=7.5, duration_s=120.0, mix=MIX, seed=3)) == (
        "dcb73230caa0f1c8880cb45693e61fb661848358719afb520e4dde424128e46b"
    )


@pytest.mark.parametrize("cv", [2.0, 4.0, 8.0])
def test_gamma_gaps_have_the_rate_and_cv_asked_for(cv):
    df = generate_trace(rate=2.5, num_tasks=200_000, mix=MIX, seed=5, arrivals="gamma", cv=cv)
    gaps = np.diff(np.concatenate([[0.0], df["arrival_s"].to_numpy()]))
    # gamma of shape 1/cv^2: the sample CV's sd is about sqrt((6 cv^2 + 2) / n) / 2, < 2.3% at cv 8
    assert gaps.mean() == pytest.approx(0.4, rel=0.05)  # its sd: cv / sqrt(n), under 2%
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)
    assert df["arrival_s"].is_monotonic_increasing


def test_gamma_duration_mode_and_bad_input():
    df = generate_trace(rate=4.0, duration_s=50.0, mix=MIX, seed=1, arrivals="gamma", cv=3.0)
    assert df["arrival_s"].max() < 50
    with pytest.raises(InputError, match="cv"):
        generate_trace(rate=4.0, num_tasks=5, mix=MIX, seed=1, arrivals="gamma")
    with pytest.raises(InputError, match="cv"):
        generate_trace(rate=4.0, num_tasks=5, mix=MIX, seed=1, cv=2.0)
    with pytest.raises(InputError, match="arrivals"):
        generate_trace(rate=4.0, num_tasks=5, mix=MIX, seed=1, arrivals="pareto")
