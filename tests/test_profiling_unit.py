"""cato-live profile's grid and its reading of streamed arrivals, without a server."""

from __future__ import annotations

import pytest

from cato_live.profiling.grid import batch_sizes, design_grid
from cato_live.profiling.measure import Arrivals, clean_gaps, steady_steps


def stream(times_ms: list[float], tokens: list[int] | None = None) -> Arrivals:
    return Arrivals(0.0, [t / 1e3 for t in times_ms], tokens or [1] * len(times_ms))


def test_grid_spans_batch_sizes_and_fits_the_model_length():
    assert batch_sizes(8) == (1, 2, 4, 8) and batch_sizes(6) == (1, 2, 4, 6) and batch_sizes(1) == (1,)
    g = design_grid(8, 2048)
    assert g.mixed_seqs == (1, 4, 7)  # room for the prompt in the batch
    assert max(g.prefill_tokens) + 2 <= 2048 and max(g.decode_contexts) + g.decode_tokens <= 2048
    small = design_grid(1, 600)
    assert small.mixed_seqs == () and max(small.prefill_tokens) <= 598
    assert "repeats" in g.describe() and g.points == 7 + 4 * 3 + 3 * 3


def test_bunched_arrivals_are_left_out():
    # steps of 2 ms, then a stall: four chunks handed over together at 20 ms, then on time
    a = stream([0, 2, 4, 6, 20, 20.01, 20.02, 20.03, 22, 24, 26])
    gaps = dict(clean_gaps(a))
    assert sorted(gaps) == [1, 2, 3, 9, 10]  # the gaps into, inside and out of the bunch are gone
    assert all(g == pytest.approx(2e-3) for g in gaps.values())


def test_steady_steps_only_while_the_batch_is_whole():
    first = stream([0, 2, 4, 6, 8, 10])
    late = stream([4, 6, 8, 10, 12, 14])  # joined at 4 ms, ends at 14 ms
    steps = steady_steps([first, late])
    # window 4..10 ms: first's gaps 4-6, 6-8, 8-10; late's 4-6, 6-8, 8-10
    assert len(steps) == 6 and all(s == pytest.approx(2e-3) for s, _ in steps)
    assert sorted(j for _, j in steps) == [1, 2, 3, 3, 4, 5]  # tokens held before each step
