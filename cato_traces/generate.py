"""Synthetic traces: Poisson (or gamma) arrivals of a task-type mix with per-type token lengths.

Arrivals are Poisson by default: exponential gaps, coefficient of variation (CV) 1. For
bursty traffic, ``arrivals="gamma"`` draws gamma gaps with the same mean 1/rate and the
given CV: shape 1/CV^2, scale CV^2/rate (CV > 1 clumps arrivals into bursts).

Token lengths are lognormals fitted to a measured mean and p99 (``fit_lognormal``), truncated
to [lo, hi] by redrawing out-of-range values, then rounded. All parameters are in ``LENGTHS``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from cato_core.errors import InputError
from cato_traces.files import write_trace

SRC = "generate_trace"
Z99 = 2.3263478740408408  # standard normal quantile at 0.99

# Prompt + output must fit Llama-2's 4096-token context (and the Vidur profiles' 1-4096 range):
# prompts are capped at 4096 minus the longest output below.
MAX_OUTPUT = 300
MAX_PROMPT = 4096 - MAX_OUTPUT


class Dist(NamedTuple):
    """Token lengths: lognormal with this mean and p99, truncated to [lo, hi]."""

    mean: float
    p99: float
    lo: int
    hi: int


# Sources: data/README.md (Llama-2 tokenizer measurements) and PAPER.md (task-type ranges).
LENGTHS: dict[str, dict[str, Dist]] = {
    "completion": {
        # py150 line-completion inputs, about 670 Llama tokens (CodeXGLUE via data/README.md).
        # No p99 is published: ours takes the spread of the Azure code-assistant trace
        # (p99/p50 = 7436/1469 -> sigma 0.697), so p99 = 670 * exp(Z99*s - s^2/2) = 2660.
        "prompt": Dist(670, 2660, 1, MAX_PROMPT),
        # About 7 output tokens (README); PAPER's range 5-20 gives the bounds and our p99.
        "output": Dist(7, 20, 5, 20),
    },
    "generation": {
        # CONCODE input (README).
        "prompt": Dist(220, 884, 1, MAX_PROMPT),
        # PAPER: long, 50-300. CONCODE targets (mean 42) are shorter than that, so we use the
        # HumanEval canonical solutions (README: mean 66, p99 195), truncated to 50-300.
        "output": Dist(66, 195, 50, MAX_OUTPUT),
    },
    "summarization": {
        # CoSQA functions (README). PAPER calls the input "long": we read that as long against
        # the 10-60 output and keep the measured functions, which prompt mode also samples.
        "prompt": Dist(85, 232, 1, MAX_PROMPT),
        # The docstrings of those CoSQA functions, estimated at CoSQA's 3.17 chars/token
        # (mean 18, p99 64), truncated to PAPER's 10-60.
        "output": Dist(18, 64, 10, 60),
    },
    "translation": {
        # CodeXGLUE Java -> C# (README): Java in, C# out.
        "prompt": Dist(50, 228, 1, MAX_PROMPT),
        "output": Dist(63, 237, 1, MAX_OUTPUT),
    },
}
TASK_TYPES = tuple(LENGTHS)
ARRIVALS = ("poisson", "gamma")


def fit_lognormal(mean: float, p99: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with this mean and 99th percentile.

    mean = exp(mu + s^2/2) and p99 = exp(mu + z*s) with z = Z99. Subtracting the logs:
    ln(p99/mean) = z*s - s^2/2, i.e. s^2 - 2*z*s + 2*ln(p99/mean) = 0, so
    s = z - sqrt(z^2 - 2*ln(p99/mean)) (the smaller root; the other has s > z, where the
    mean lies above the p99), and mu = ln(mean) - s^2/2. A solution needs
    1 < p99/mean <= exp(z^2/2) (about 15).
    """
    if not (mean > 0 and p99 > mean):
        raise InputError("fit_lognormal", "p99", f"greater than the mean {mean} > 0 (got {p99})")
    r = math.log(p99 / mean)
    if r > Z99**2 / 2:
        raise InputError("fit_lognormal", "p99", f"at most {math.exp(Z99**2 / 2):.2f} x the mean")
    s = Z99 - math.sqrt(Z99**2 - 2 * r)
    return math.log(mean) - s * s / 2, s


def sample_lengths(dist: Dist, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` integer token lengths from ``dist``, all within [lo, hi]."""
    mu, s = fit_lognormal(dist.mean, dist.p99)
    x = rng.lognormal(mu, s, n)
    # Redraw rather than clip, so narrow ranges (5-20, 50-300) get no spike at a bound.
    for _ in range(100):
        bad = np.flatnonzero((x < dist.lo) | (x > dist.hi))
        if not bad.size:
            break
        x[bad] = rng.lognormal(mu, s, bad.size)
    return np.clip(np.rint(x), dist.lo, dist.hi).astype(np.int64)


def _gaps(rng: np.random.Generator, rate: float, cv: float | None):
    """Inter-arrival gaps of ``n``: exponential (Poisson; ``cv`` None) or gamma with that CV."""
    if cv is None:
        return lambda n: rng.exponential(1 / rate, n)  # the draws of every Poisson trace so far
    shape = 1 / (cv * cv)
    return lambda n: rng.gamma(shape, 1 / (rate * shape), n)


def _arrivals(rng: np.random.Generator, rate: float, duration_s, num_tasks, cv: float | None = None) -> np.ndarray:
    gaps = _gaps(rng, rate, cv)
    if num_tasks is not None:
        return np.cumsum(gaps(num_tasks))
    # Draw in chunks sized well past the expected count; usually one chunk suffices.
    chunk = int(rate * duration_s + 5 * math.sqrt(rate * duration_s)) + 16
    t = np.cumsum(gaps(chunk))
    while t[-1] < duration_s:
        t = np.concatenate([t, t[-1] + np.cumsum(gaps(chunk))])
    return t[t < duration_s]


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _validate(rate, duration_s, num_tasks, mix, seed, lengths, with_prompt, arrivals="poisson", cv=None) -> None:
    if not (_is_num(rate) and math.isfinite(rate) and rate > 0):
        raise InputError(SRC, "rate", f"tasks per second > 0 (got {rate!r})")
    if arrivals not in ARRIVALS:
        raise InputError(SRC, "arrivals", f"one of {list(ARRIVALS)} (got {arrivals!r})")
    if arrivals == "gamma" and not (_is_num(cv) and math.isfinite(cv) and cv > 0):
        raise InputError(SRC, "cv", f"the gaps' coefficient of variation > 0 for gamma arrivals (got {cv!r})")
    if arrivals == "poisson" and cv is not None:
        raise InputError(SRC, "cv", "no value with Poisson arrivals (their CV is 1); use arrivals='gamma'")
    if (duration_s is None) == (num_tasks is None):
        raise InputError(SRC, "duration_s", "exactly one of 'duration_s' or 'num_tasks'")
    if duration_s is not None and not (_is_num(duration_s) and 0 < duration_s < math.inf):
        raise InputError(SRC, "duration_s", f"seconds > 0 (got {duration_s!r})")
    if num_tasks is not None and not (_is_int(num_tasks) and num_tasks >= 1):
        raise InputError(SRC, "num_tasks", f"an integer >= 1 (got {num_tasks!r})")
    if not isinstance(mix, dict) or not mix:
        raise InputError(SRC, "mix", f"a non-empty mapping of task type to weight, types {list(TASK_TYPES)}")
    for k, w in mix.items():
        if k not in LENGTHS:
            raise InputError(SRC, "mix", f"task types from {list(TASK_TYPES)} (got {k!r})")
        if not (_is_num(w) and math.isfinite(w) and w >= 0):
            raise InputError(SRC, f"mix.{k}", f"a weight >= 0 (got {w!r})")
    if sum(mix.values()) <= 0:
        raise InputError(SRC, "mix", "weights summing to more than 0")
    if not (_is_int(seed) and seed >= 0):
        raise InputError(SRC, "seed", f"an integer >= 0 (got {seed!r})")
    if lengths not in ("measured", "prompts"):
        raise InputError(SRC, "lengths", f"'measured' or 'prompts' (got {lengths!r})")
    if with_prompt and lengths != "prompts":
        raise InputError(SRC, "with_prompt", "lengths='prompts' (only sampled prompts have text)")


def generate_trace(
    *,
    rate: float,
    duration_s: float | None = None,
    num_tasks: int | None = None,
    mix: dict[str, float],
    seed: int,
    lengths: str = "measured",
    with_prompt: bool = False,
    data_dir: str | Path | None = None,
    arrivals: str = "poisson",
    cv: float | None = None,
) -> pd.DataFrame:
    """A trace (cato_traces.files schema) of Poisson arrivals at ``rate`` tasks/s, or of
    gamma arrivals at that rate whose gaps have coefficient of variation ``cv``
    (``arrivals="gamma"``).

    Give exactly one of ``duration_s`` (arrivals before it) or ``num_tasks``. Task types are
    drawn by the ``mix`` weights. ``lengths="measured"`` samples both token counts from
    ``LENGTHS``; ``"prompts"`` samples a shipped prompt per task (cato_traces.prompts) and takes
    its estimated tokens, outputs still from ``LENGTHS``; ``with_prompt`` adds its text.
    Every draw comes from one ``numpy.random.default_rng(seed)``.
    """
    _validate(rate, duration_s, num_tasks, mix, seed, lengths, with_prompt, arrivals, cv)
    pools = None
    if lengths == "prompts":
        from cato_traces.prompts import load_pools  # reads files: only when asked

        pools = load_pools(data_dir)
    rng = np.random.default_rng(seed)
    arrival = _arrivals(rng, float(rate), duration_s, num_tasks, None if arrivals == "poisson" else float(cv))
    n = arrival.size
    if n == 0:
        raise InputError(SRC, "duration_s", f"long enough for one arrival at rate {rate} (got {duration_s})")

    # Canonical type order, so the mix's key order does not change the trace.
    types = [t for t in TASK_TYPES if mix.get(t, 0) > 0]
    w = np.array([mix[t] for t in types], dtype=np.float64)
    kind = rng.choice(len(types), size=n, p=w / w.sum())

    prompt_tokens = np.empty(n, np.int64)
    output_tokens = np.empty(n, np.int64)
    prompt = np.empty(n, object) if with_prompt else None
    for k, t in enumerate(types):
        sel = np.flatnonzero(kind == k)
        if pools is None:
            prompt_tokens[sel] = sample_lengths(LENGTHS[t]["prompt"], sel.size, rng)
        else:
            texts, tokens = pools[t].sample(sel.size, rng, max_tokens=LENGTHS[t]["prompt"].hi)
            prompt_tokens[sel] = tokens
            if prompt is not None:
                prompt[sel] = texts
        output_tokens[sel] = sample_lengths(LENGTHS[t]["output"], sel.size, rng)

    df = pd.DataFrame(
        {
            "task_id": [f"t{i:06d}" for i in range(1, n + 1)],
            "arrival_s": arrival,
            "task_type": np.array(types, dtype=object)[kind],
            "prompt_tokens": prompt_tokens,
            "output_tokens": output_tokens,
        }
    )
    if prompt is not None:
        df["prompt"] = prompt
    return df


def save_trace(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as a trace parquet (cato_traces.files.write_trace)."""
    write_trace(df, path)
