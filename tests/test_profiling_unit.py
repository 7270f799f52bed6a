"""cato-live profile's grid and its reading of streamed arrivals, without a server."""

from __future__ import annotations

import pytest

from cato_live.profiling.backend import vllm_samples
from cato_live.profiling.grid import batch_sizes, design_grid
from cato_live.profiling.measure import Arrivals, Profiler, arrival_excess, clean_gaps, steady_step


def stream(times_ms: list[float], tokens: list[int] | None = None) -> Arrivals:
    return Arrivals(0.0, [t / 1e3 for t in times_ms], tokens or [1] * len(times_ms))


def test_grid_spans_batch_sizes_and_fits_the_model_length():
    assert batch_sizes(8) == (1, 2, 4, 8) and batch_sizes(6) == (1, 2, 4, 6) and batch_sizes(1) == (1,)
    g = design_grid(8, 2048)
    assert g.mixed_seqs == (1, 4, 7)  # room for the prompt in the batch
    assert max(g.prefill_tokens) + 2 <= 2048 and max(g.decode_contexts) + g.decode_tokens <= 2048
    small = design_grid(1, 600)
    assert small.mixed_seqs == () and max(small.prefill_tokens) <= 598
    assert "5 rounds over the grid" in g.describe() and g.points == 7 + 4 * 3 + 3 * 3 + 1
    # the arrival part: prompts at 10/s beside the middle mixed batch
    assert (g.arrival_seqs, g.arrival_prompt, g.arrival_rate) == (4, 64, 10.0)
    assert "arrival: 64-token prompts at 10/s beside 4 decoding (256 tokens)" in g.describe()
    assert small.arrival_seqs == 0 and "arrival" not in small.describe()


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


def test_an_arrivals_excess_is_the_time_it_added_to_the_decoders_steps():
    # 2 ms steps; an arrival sent at 10.5 ms stretches the step to 13 ms and brings a mixed
    # step that ends with its first token at 17 ms; steady again from there
    a = stream([0, 2, 4, 6, 8, 10, 13, 17, 19, 21, 23, 25, 27, 29, 31])
    # from the chunk at 10 ms to the third after 17 ms (23 ms): 13 ms for 5 steps of 2 ms
    assert arrival_excess(a, [(0.0105, 0.017)]) == pytest.approx([0.003])
    # an arrival whose stretch overlaps another's is left out, both of them; so is one too
    # near the end for three steps after its first token, and one sent before the stream
    assert arrival_excess(a, [(0.0105, 0.017), (0.0125, 0.019)]) == []
    assert arrival_excess(a, [(0.0105, 0.017), (0.0275, 0.029)]) == pytest.approx([0.003])
    assert arrival_excess(a, [(-0.001, 0.003)]) == []
    # a bunched hand-over inside the stretch says nothing of the engine: left out
    bunched = stream([0, 2, 4, 6, 8, 10, 13, 17, 17.05, 21, 23, 25, 27, 29, 31])
    assert arrival_excess(bunched, [(0.0105, 0.017)]) == []


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


class ScriptedProfiler(Profiler):
    """The Profiler's rounds with its samplers replaced by a script, to check the
    order of the samples and how they are combined; tests/live/test_profile_vllm.py runs the
    real samplers against vLLM."""

    def __init__(self, grid, spoiled=()):
        super().__init__(None, grid)
        self.calls, self.spoiled = [], set(spoiled)

    async def warm_up(self):
        pass

    async def _take(self, label, seconds):
        self.calls.append(label)
        return None if label in self.spoiled else (seconds, 10.0 * len(self.calls))

    async def prefill(self, p):
        return await self._take(f"p{p}", p / 1e3)

    async def decode(self, n, c):
        return await self._take(f"d{n},{c}", n / 1e3)

    async def mixed(self, n, p):
        return await self._take(f"m{n},{p}", (n + p) / 1e3)

    async def arrival(self, n, p):  # one sample per arrival, as the real sampler gives
        got = await self._take(f"a{n}", 0.002)
        return None if got is None else [got]


def test_profiler_measures_in_rounds_reversed_every_other_round():
    import asyncio
    import dataclasses

    grid = dataclasses.replace(
        design_grid(2, 2048, repeats=3),
        prefill_tokens=(16, 64),
        decode_seqs=(1,),
        decode_contexts=(16,),
        mixed_seqs=(1,),
        mixed_prefill=(64,),
    )
    prof = ScriptedProfiler(grid, spoiled={"m1,64"})
    points = asyncio.run(prof.run())
    one_round = ["p16", "p64", "d1,16"] + ["m1,64"] * 4 + ["a1"]  # a spoiled sample is tried RETRIES times
    assert prof.calls == one_round + one_round[::-1] + one_round
    # the never-clean mixed point is left out, with why; the others are medians of 3 samples
    assert [(p.part, p.label, p.seconds, p.seqs) for p in points] == [
        ("prefill", "p=16", 0.016, 1),
        ("prefill", "p=64", 0.064, 1),
        ("decode", "n=1 c=16", 0.001, 1),
        ("arrival", "n=1 p=64 at 10/s", 0.002, 2),  # T, A and S of the mixed step it brings
    ]
    assert (points[3].tokens, points[3].prefill_attn) == (65, 64.0 * 64)
    assert prof.skipped == ["no clean mixed step seen for n=1 p=64 in 12 tries (a busy machine?)"]
    # C of the decode point: the median of its samples' C (calls 3, 14 and 19, times 10)
    assert points[2].decode_ctx == 140.0 and points[1].prefill_attn == 64.0 * 64


def test_the_arrival_point_is_the_median_of_every_arrival_of_every_round():
    """Rounds bring 3, 1 and 1 arrivals: the point is the median of all five (3 ms), not of
    the rounds' medians (10 ms)."""
    import asyncio
    import dataclasses

    class Arrivals3(ScriptedProfiler):
        rounds = iter([[1e-3, 2e-3, 3e-3], [10e-3], [11e-3]])

        async def arrival(self, n, p):
            return [(x, 500.0) for x in next(self.rounds)]

    grid = dataclasses.replace(
        design_grid(8, 2048, repeats=3), prefill_tokens=(), decode_seqs=(), decode_contexts=(), mixed_seqs=()
    )
    (pt,) = asyncio.run(Arrivals3(grid).run())
    assert (pt.part, pt.seconds, pt.decode_ctx, pt.tokens, pt.seqs) == ("arrival", 3e-3, 500.0, 68, 5)
