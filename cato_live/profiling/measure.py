"""Time engine steps of a live OpenAI-compatible vLLM through its streamed completions API.

Every request is a list of random token IDs (exact length; distinct, so vLLM's prefix cache
never skips a prefill) with ``ignore_eos`` and ``min_tokens`` = ``max_tokens`` (exact output
length) and ``return_token_ids`` (how many tokens each streamed chunk carries). Arrival times
are taken at the client, one per chunk; a decode step produces one chunk per sequence.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import httpx
import numpy as np

from cato_live.error_text import describe, error_message
from cato_live.profiling.backend import vllm_samples
from cato_live.profiling.grid import Grid

FIRST_ID = 10  # token IDs below this are left alone (special tokens of small vocabularies)
RETRIES = 4  # tries a repeat may take when stalls spoil its timing
IDLE_WAIT_S = 30.0  # how long to wait for a shared replica to go idle before a point
# Chunks closer than this came out of one buffer (no engine steps that fast), not one a step.
BUNCHED_S = 2e-4
MIN_STEPS = 3  # clean steps a decode run needs to count


class MeasureError(RuntimeError):
    """A request failed or the replica answered something unexpected."""


@dataclass
class Arrivals:
    """One streamed request: when it was sent and when each chunk (with its tokens) came."""

    sent: float
    times: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # tokens in each chunk
    reached: dict[int, asyncio.Event] = field(default_factory=dict)  # token count -> event

    @property
    def count(self) -> int:
        return sum(self.tokens)


@dataclass(frozen=True)
class Point:
    """One measured step time: T, A, C and S of the step and its median seconds over the rounds."""

    part: str  # "prefill" (a lone TTFT), "decode", "mixed" or "arrival" (see cato_live.profiling.grid)
    tokens: int
    prefill_attn: float
    decode_ctx: float
    seqs: int  # sequences the step gives a token
    seconds: float
    label: str  # what was run, for the provenance


class Client:
    """Streams completions from ``base_url`` for ``model``; IDs drawn below ``vocab``."""

    def __init__(
        self,
        base_url: str,
        model: str,
        vocab: int,
        seed: int | None = None,
        timeout_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
    ):
        self.base_url, self.model, self.vocab = base_url, model, vocab
        self.rng = np.random.default_rng(seed)  # None: fresh entropy; no run hits an earlier run's prefix cache
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=self.headers)

    async def aclose(self) -> None:
        await self.http.aclose()

    def prompt(self, n: int) -> list[int]:
        return self.rng.integers(FIRST_ID, self.vocab, n).tolist()

    async def stream(self, prompt_tokens: int, output_tokens: int, arrivals: Arrivals | None = None) -> Arrivals:
        """POST a streamed completion of exactly these lengths; chunk arrival times in ``arrivals``."""
        body = {
            "model": self.model,
            "prompt": self.prompt(prompt_tokens),
            "max_tokens": output_tokens,
            "min_tokens": output_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True},
        }
        arr = arrivals or Arrivals(0.0)
        usage = None
        try:
            async with asyncio.timeout(self.timeout_s):
                async for event in self._events(body, arr):
                    now = time.perf_counter()
                    for choice in event.get("choices") or ():
                        ids = choice.get("token_ids")
                        k = len(ids) if ids is not None else 1
                        if k:
                            arr.times.append(now)
                            arr.tokens.append(k)
                    usage = event.get("usage") or usage
                    for need, ev in arr.reached.items():
                        if arr.count >= need:
                            ev.set()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as e:
            raise MeasureError(f"{self.base_url}: {describe(e)}") from None
        if (
            usage is None
            or usage.get("completion_tokens") != output_tokens
            or usage.get("prompt_tokens") != prompt_tokens
        ):
            raise MeasureError(
                f"{self.base_url} did not run {prompt_tokens} + {output_tokens} tokens exactly (usage {usage}); "
                "it must honour ignore_eos, min_tokens and token-ID prompts (vLLM does)"
            )
        return arr

    async def _events(self, body: dict, arr: Arrivals) -> AsyncIterator[dict]:
        """The server-sent events of one POST /v1/completions on a fresh HTTP/1.1 connection.

        A plain asyncio stream rather than httpx: with several streams in flight, httpx handed
        over each one's chunks together at its end, which would hide the step times.
        """
        url = httpx.URL(self.base_url)
        reader, writer = await asyncio.open_connection(url.host, url.port or 80)
        try:
            payload = json.dumps(body).encode()
            head = (
                f"POST {url.raw_path.decode().rstrip('/')}/v1/completions HTTP/1.1\r\nHost: {url.netloc.decode()}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
                + "\r\n"
            )
            arr.sent = time.perf_counter()  # after connecting: a gateway keeps its connections open
            writer.write(head.encode() + payload)
            await writer.drain()
            status = (await reader.readline()).decode("latin-1").split()
            headers = {}
            while (line := (await reader.readline()).decode("latin-1").strip()) != "":
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            chunked = "chunked" in headers.get("transfer-encoding", "")
            if len(status) < 2 or status[1] != "200":
                text = (await _read_body(reader, chunked)).decode("utf-8", "replace")
                raise MeasureError(f"HTTP {' '.join(status[1:]) or '?'} from {self.base_url}: {error_message(text)}")
            buf = b""
            async for data in _body_parts(reader, chunked):
                buf += data
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    if not raw.startswith(b"data:"):
                        continue
                    text = raw[5:].strip()
                    if text == b"[DONE]":
                        return
                    yield json.loads(text)
        finally:
            writer.close()

    async def metrics(self) -> dict[str, float]:
        """vLLM's /metrics gauges (first sample of each name); empty if it has none."""
        try:
            resp = await self.http.get("/metrics")
        except httpx.HTTPError:
            return {}
        if resp.status_code != 200:
            return {}
        return {name: sample.value for name, sample in vllm_samples(resp.text).items()}

    async def wait_idle(self) -> None:
        """Wait (bounded) until the replica runs and queues nothing: a shared --target may be busy."""
        end = time.monotonic() + IDLE_WAIT_S
        while time.monotonic() < end:
            m = await self.metrics()
            if m.get("vllm:num_requests_running", 0) == 0 and m.get("vllm:num_requests_waiting", 0) == 0:
                return
            await asyncio.sleep(0.05)


def clean_gaps(a: Arrivals, start: float = float("-inf"), end: float = float("inf")) -> list[tuple[int, float]]:
    """(index, seconds) of each gap between consecutive one-token chunks that arrived in
    [start, end], both ends on time.

    A stall of the client or of the API server (the machine is shared) holds chunks back and
    hands them over together: chunks less than BUNCHED_S apart sat in a buffer, so a gap that
    ends or starts at one of them says nothing about the engine's step.
    """
    t, k = a.times, a.tokens
    late = [
        (i > 0 and t[i] - t[i - 1] < BUNCHED_S) or (i + 1 < len(t) and t[i + 1] - t[i] < BUNCHED_S)
        for i in range(len(t))
    ]
    return [
        (i, t[i] - t[i - 1])
        for i in range(1, len(t))
        if start <= t[i - 1] and t[i] <= end and k[i] == 1 and not late[i] and not late[i - 1]
    ]


def arrival_excess(decoder: Arrivals, spans: list[tuple[float, float]], after: int = 3) -> list[float]:
    """What each arrival cost a decoding stream, in engine seconds: over the decoder's chunks
    from the last before the arrival was sent to the ``after``-th after its first token, the
    time less as many steps at the stream's own median step away from arrivals.

    ``spans``: (sent, first token) of each arrival. Those whose stretches overlap, or that
    fall outside the stream, are left out, as are stretches with chunks handed over in a
    bunch (clean_gaps): measured against its own stream's steady step, one arrival's excess
    is immune to the machine's drift over the run.
    """
    t, k = decoder.times, decoder.tokens
    if len(t) < 2:
        return []
    stretches = []
    for sent, first in sorted(spans):
        i = bisect.bisect_right(t, sent) - 1  # the last chunk before the arrival was sent
        at = bisect.bisect_left(t, first)  # the first with or after its first token
        if i >= 0 and at + after < len(t):
            stretches.append((i, at + after))
    clean = dict(clean_gaps(decoder))
    alone = [gap for j, gap in clean.items() if not any(i < j <= e for i, e in stretches)]  # no arrival touched
    overlapping = {
        m
        for m, (i, e) in enumerate(stretches)
        for m2, (i2, e2) in enumerate(stretches)
        if m != m2 and i < e2 and i2 < e
    }
    if not alone:
        return []
    step = statistics.median(alone)
    out = []
    for m, (i, e) in enumerate(stretches):
        if m in overlapping or any(j not in clean for j in range(i + 1, e + 1)):
            continue
        out.append(t[e] - t[i] - sum(k[i + 1 : e + 1]) * step)
    return out


def extra_per_arrival(step_s: float, base_s: float, steps: float, arrivals: float) -> float:
    """Engine seconds one arrival cost a decoding batch: its steps' growth (mean step with the
    arrivals less without) over a window of ``steps`` steps, shared among the arrivals in it."""
    return (step_s - base_s) * steps / arrivals


def steady_step(streams: list[Arrivals]) -> tuple[float, float] | None:
    """(seconds per decode step, tokens each sequence had generated at mid-window) while the
    batch was whole: after the last sequence's first token, up to the first one's last token.

    The mean over the window (its time over the tokens made in it), not a median of gaps:
    the simulator needs the time a decode takes on average, hiccups of the engine, the API
    server and the machine included, and counting tokens is immune to chunks handed over
    in bunches. The median over the streams (they step together). None: under 3 steps.
    """
    start = max(s.times[0] for s in streams)
    end = min(s.times[-1] for s in streams)
    per_step, held = [], []
    for s in streams:
        inside = [i for i, t in enumerate(s.times) if start <= t <= end]
        if len(inside) < 2:
            continue
        first, last = inside[0], inside[-1]
        steps = sum(s.tokens[first + 1 : last + 1])
        if steps < MIN_STEPS:
            continue
        per_step.append((s.times[last] - s.times[first]) / steps)
        held.append(sum(s.tokens[: first + 1]) + steps / 2)
    if not per_step:
        return None
    return statistics.median(per_step), statistics.median(held)


async def _body_parts(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The response body as it arrives (HTTP/1.1 chunked transfer coding, or until close)."""
    if not chunked:
        while data := await reader.read(65536):
            yield data
        return
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)  # the chunk's CRLF


async def _read_body(reader: asyncio.StreamReader, chunked: bool) -> bytes:
    return b"".join([part async for part in _body_parts(reader, chunked)])


async def decode_beside_arrivals(
    client: Client, decoders: int, context: int, decode_tokens: int, rate: float, prompt: int
) -> tuple[list[Arrivals], list[Arrivals]]:
    """``decoders`` sequences of ``context`` prompt tokens decode ``decode_tokens`` each while
    prompts of ``prompt`` tokens (one output token) arrive as a Poisson stream at ``rate`` a
    second (0: none): (the decoders' streams, the arrivals' streams)."""
    newcomers: list[asyncio.Task] = []
    done = asyncio.Event()

    async def feed() -> None:
        while rate and not done.is_set():
            await asyncio.sleep(client.rng.exponential(1 / rate))
            if not done.is_set():
                newcomers.append(asyncio.create_task(client.stream(prompt, 1)))

    feeder = asyncio.create_task(feed())
    try:
        streams = await asyncio.gather(*(client.stream(context, decode_tokens) for _ in range(decoders)))
    finally:
        done.set()
        await feeder
        arrived = await asyncio.gather(*newcomers)
    return list(streams), list(arrived)


def point(part: str, args: tuple[int, ...], label: str, samples: list[tuple[float, float]]) -> Point:
    """A grid point from its samples, (seconds, C), of every round: their medians."""
    seconds = statistics.median(s for s, _ in samples)
    ctx = float(statistics.median(c for _, c in samples))
    if part == "prefill":
        (p,) = args
        return Point(part, p, float(p * p), 0.0, 1, seconds, label)
    if part == "decode":
        n, _ = args
        return Point(part, n, 0.0, ctx, n, seconds, label)
    # n decoders and a prompt whose first token ends the step (for "arrival": the seconds an
    # arrival cost, with T, A, C and S of the mixed step it brings)
    n, p = args
    return Point(part, n + p, float(p * p), ctx, n + 1, seconds, label)


class Profiler:
    """Runs a Grid's points on one replica; ``tick(label)`` after each measurement.

    The grid is measured in rounds: each round takes one sample of every point (of the arrival
    point, one per arrival), in the grid's order, reversed every other round; a point's time
    is the median of its samples.
    A shared machine has slow spells that last seconds (a lone decode measured 4-6 ms a
    step in one minute and 3-4 ms in the next), so samples of one point taken back to back
    would all land in one spell and skew the fit; spread over the run, the spells hit every
    point alike.
    """

    def __init__(
        self, client: Client, grid: Grid, tick: Callable[[str], None] = lambda _label: None, shared: bool = False
    ):
        self.client, self.grid, self.tick = client, grid, tick
        # a replica others may use (--target): wait for it to be idle before each point. Not
        # for our own replica: nobody else sends it work, and a /metrics scrape is work too.
        self.shared = shared
        self.skipped: list[str] = []  # why points were left out

    async def warm_up(self) -> None:
        """The first requests after start-up (and of each new shape) are slow: run each shape once."""
        c, g = self.client, self.grid
        for p in g.prefill_tokens:
            await c.stream(p, 2)
        n = max(g.decode_seqs)
        await asyncio.gather(*(c.stream(max(g.decode_contexts), 8) for _ in range(n)))

    async def prefill(self, p: int) -> tuple[float, float]:
        """One lone TTFT of a p-token prompt: (seconds, C = 0)."""
        a = await self.client.stream(p, 1)
        # not screened for bunching like the gaps: a client stall is rare and the median
        # drops it, while an API server that lags behind its engine is what clients see
        return a.times[0] - a.sent, 0.0

    async def decode(self, n: int, context: int) -> tuple[float, float] | None:
        """One steady decode step of n sequences of ``context`` prompt tokens: (seconds, C)."""
        g = self.grid
        streams = await asyncio.gather(*(self.client.stream(context, g.decode_tokens) for _ in range(n)))
        run = steady_step(list(streams))
        return None if run is None else (run[0], n * (context + run[1]))

    async def mixed(self, n: int, p: int) -> tuple[float, float] | None:
        """One step that ran a p-token prompt beside n decoding sequences: (seconds, C)."""
        g, c = self.grid, self.client
        lead = 4  # decode steps before the prompt arrives: the batch is steady by then
        decoders = [Arrivals(0.0, reached={lead: asyncio.Event()}) for _ in range(n)]
        # enough tokens to outlast the prompt's step with some to spare
        runs = [asyncio.create_task(c.stream(g.mixed_context, g.decode_tokens, a)) for a in decoders]
        try:
            await asyncio.gather(*(a.reached[lead].wait() for a in decoders))
            newcomer = await c.stream(p, 1)
            await asyncio.gather(*runs)
        finally:
            for t in runs:
                t.cancel()
        first = newcomer.times[0]
        step, held = [], []
        for a in decoders:
            # the decoders' chunk that came with the newcomer's first token ends the mixed step
            clean = dict(clean_gaps(a))
            i = min(range(1, len(a.times)), key=lambda j, a=a: abs(a.times[j] - first))
            if i in clean and abs(a.times[i] - first) < clean[i] / 2:
                step.append(clean[i])
                held.append(g.mixed_context + sum(a.tokens[:i]))
        return (statistics.median(step), statistics.median(held) * n) if step else None

    async def arrival(self, n: int, p: int) -> list[tuple[float, float]] | None:
        """Engine seconds one arriving prompt cost n decoders: p-token prompts (one output token)
        arrive as a Poisson stream while they decode; each arrival's excess (arrival_excess) in
        each decoder's stream is a sample of its own: [(seconds per arrival, C at mid-run)].

        The point's time is then the median over every arrival of every round, not a median of
        round medians: a round holds only about a dozen arrivals, so its median is itself
        noisy, and the profile's frontend_cpu_s rests on this one point. The median, not the mean:
        on a shared host a few arrivals meet a stall of the machine (up to 20 ms here), which
        the mean would charge to every arrival."""
        g = self.grid
        decoders, arrived = await decode_beside_arrivals(
            self.client, n, g.mixed_context, g.arrival_decode_tokens, g.arrival_rate, p
        )
        spans = [(a.sent, a.times[0]) for a in arrived]
        excess = [x for d in decoders for x in arrival_excess(d, spans)]
        run = steady_step(list(decoders))
        if not excess or run is None:
            return None
        context = n * (g.mixed_context + run[1])
        return [(x, context) for x in excess]

    def _jobs(self) -> list[tuple[str, Callable, tuple[int, ...], str]]:
        """(part, sampler, its arguments, label) of every grid point, in the grid's order."""
        g = self.grid
        jobs = [("prefill", self.prefill, (p,), f"p={p}") for p in g.prefill_tokens]
        jobs += [("decode", self.decode, (n, c), f"n={n} c={c}") for n in g.decode_seqs for c in g.decode_contexts]
        jobs += [("mixed", self.mixed, (n, p), f"n={n} p={p}") for n in g.mixed_seqs for p in g.mixed_prefill]
        if g.arrival_seqs:
            n, p = g.arrival_seqs, g.arrival_prompt
            jobs.append(("arrival", self.arrival, (n, p), f"n={n} p={p} at {g.arrival_rate:g}/s"))
        return jobs

    async def _sample(self, sampler: Callable, args: tuple[int, ...]) -> list[tuple[float, float]]:
        """A round's clean samples of a point (one, or one per arrival), trying again (up to
        RETRIES) when stalls spoil it; [] if they all did."""
        if self.shared:
            await self.client.wait_idle()
        for _ in range(RETRIES):
            if (got := await sampler(*args)) is not None:
                return got if isinstance(got, list) else [got]
        return []

    async def run(self) -> list[Point]:
        """Warm up, then measure every point of the grid, ``repeats`` rounds."""
        await self.warm_up()
        jobs = self._jobs()
        samples: list[list[tuple[float, float]]] = [[] for _ in jobs]
        for r in range(self.grid.repeats):
            for i in range(len(jobs)) if r % 2 == 0 else range(len(jobs) - 1, -1, -1):
                part, sampler, args, label = jobs[i]
                got = await self._sample(sampler, args)
                samples[i].extend(got)
                self.tick(f"{part} {label}" if got else f"{part} {label}: spoiled")
        points = []
        for (part, _, args, label), got in zip(jobs, samples, strict=True):
            if not got:
                what = {"decode": "steady decode steps", "mixed": "clean mixed step"}.get(part, "steady decode window")
                self.skipped.append(
                    f"no {what} seen for {label} in {self.grid.repeats * RETRIES} tries (a busy machine?)"
                )
                continue
            points.append(point(part, args, label, got))
        if len(points) < len(jobs) / 2:
            raise MeasureError(
                f"{len(jobs) - len(points)} of {len(jobs)} points could not be timed; first: {self.skipped[0]}"
            )
        return points
