"""cato-live profile's grid and its reading of streamed arrivals, without a server."""

from __future__ import annotations

import pytest

from cato_live.profiling.backend import vllm_samples
from cato_live.profiling.grid import batch_sizes, design_grid
from cato_live.profiling.measure import Arrivals, clean_gaps, steady_step


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


def test_steady_step_is_the_mean_while_the_batch_is_whole():
    first = stream([0, 2, 4, 6, 8, 10])
    late = stream([4, 6, 8, 10, 12, 14])  # joined at 4 ms, ends at 14 ms
    # window 4..10 ms: 3 steps of 2 ms in each; first had made 3 tokens at 4 ms, late 1
    per_step, held = steady_step([first, late])
    assert per_step == pytest.approx(2e-3) and held == pytest.approx((3 + 1.5 + 1 + 1.5) / 2)


def test_steady_step_counts_a_stall_and_the_tokens_a_bunch_carries():
    # 2 ms steps, a 10 ms stall, then two chunks of 2 tokens: 9 tokens in the 22 ms after the first
    a = stream([0, 2, 4, 6, 16, 18, 20, 22], tokens=[1, 1, 1, 1, 1, 2, 2, 1])
    per_step, _ = steady_step([a])
    assert per_step == pytest.approx(22e-3 / 9)


def test_vllm_samples_reads_the_first_sample_of_each_vllm_metric():
    text = (
        "# TYPE vllm:cache_config_info gauge\n"
        'vllm:cache_config_info{block_size="16",kv_cache_size_tokens="2097152"} 1.0\n'
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0"} 3.0\n'
        'vllm:num_requests_running{engine="1"} 5.0\n'
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total 7.0\n"
    )
    s = vllm_samples(text)
    assert set(s) == {"vllm:cache_config_info", "vllm:num_requests_running"}
    assert s["vllm:cache_config_info"].labels["kv_cache_size_tokens"] == "2097152"
    assert s["vllm:num_requests_running"].value == 3.0
    assert vllm_samples("not a metrics page {") == {}
