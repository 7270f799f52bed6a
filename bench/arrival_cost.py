"""What a new request costs the batch already running on a replica, against the step model.

The step model charges an arriving prompt one mixed step: the decoders' step grows by the
prompt's tokens, its attention and one more sequence (cato_core/profile.py). On vLLM's CPU
build the API server shares the engine's core, so its own work for the request (reading and
checking the body, handing it to the engine, finishing it) may take engine time beyond that
step. This bench measures it on a real replica: --decoders sequences (prompt 64 tokens,
--decode-tokens each) decode while prompts of --prompt tokens with one output token arrive
as a Poisson stream at each of --rates (0 first: the baseline); the decoders' mean step over
the window where all of them ran (the profiler's steady_step) gives the engine time each
arrival cost:

    extra per arrival = (step with arrivals - step without) x steps in the window / arrivals in it

and, as `cato-live profile` measures it, the median over the arrivals of each one's excess
over its decoders' own steady step (cato_live.profiling.measure.arrival_excess), both next to what the profile's model charges for one: the mixed step, step_s(n + p, p^2, C, n + 1)
- step_s(n, 0, C, n), plus frontend_cpu_s, which `cato-live profile` fits from one such rate
(cato_live/profiling/grid.py). Rates alternate in order by round, so the machine's slow spells hit each alike;
medians over --rounds. Figures, not asserts.

One vLLM replica from the DEPLOY's provisioner, pinned to core 0 (or --target URL); this
process on the other cores. Run nothing else meanwhile. Uses CATO_VLLM_PYTHON and
CATO_TINY_MODEL (default: the Makefile's .vllm-venv and .cache/tiny-model).

    make vllm && python bench/arrival_cost.py [--rates 0,10,30] [--rounds 5] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cato_core.profile import DeviceProfile, load_profile  # noqa: E402
from cato_live.profiling.measure import (  # noqa: E402
    Client,
    arrival_excess,
    decode_beside_arrivals,
    extra_per_arrival,
    steady_step,
)
from cato_profiles.fit import modelled_arrival_s  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from live_bench import TINY_MODEL, VLLM_PYTHON  # noqa: E402

DECODER_PROMPT = 64  # tokens of each decoder's prompt


async def one_window(client: Client, decoders: int, decode_tokens: int, rate: float, prompt: int) -> tuple:
    """(mean step s, steps in the window, arrivals sent within it, context held at mid-window,
    each arrival's excess in each decoder's stream)."""
    streams, arrived = await decode_beside_arrivals(client, decoders, DECODER_PROMPT, decode_tokens, rate, prompt)
    spans = [(a.sent, a.times[0]) for a in arrived]
    excess = [x for s in streams for x in arrival_excess(s, spans)]
    step, held = steady_step(streams)
    start = max(s.times[0] for s in streams)
    end = min(s.times[-1] for s in streams)
    inside = sum(start <= sent <= end for sent, _ in spans)
    return step, (end - start) / step, inside, decoders * (DECODER_PROMPT + held), excess


async def measure(url: str, model: str, args, profile: DeviceProfile) -> None:
    client = Client(url, model, args.vocab_size, args.seed)
    rates = [float(r) for r in args.rates.split(",")]
    if rates[0] != 0:
        rates.insert(0, 0.0)
    for _ in range(2):  # warm-up: every shape once
        await one_window(client, args.decoders, 16, max(rates), args.prompt)
    got: dict[float, list[tuple]] = {r: [] for r in rates}
    for k in range(args.rounds):
        for rate in rates if k % 2 == 0 else rates[::-1]:
            got[rate].append(await one_window(client, args.decoders, args.decode_tokens, rate, args.prompt))
        print(f"round {k + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    await client.aclose()

    base = statistics.median(w[0] for w in got[0.0])
    context = statistics.median(w[3] for w in got[0.0])
    model_s = modelled_arrival_s(profile, args.decoders, args.prompt, context) + profile.frontend_cpu_s
    print(
        f"{args.decoders} decoders (prompt {DECODER_PROMPT}, {args.decode_tokens} tokens each); arrivals of "
        f"{args.prompt}-token prompts, 1 output token; {args.rounds} rounds, medians; profile {profile.name}"
    )
    print(
        "| arrivals/s | step ms | arrivals in window | extra engine ms per arrival: window | "
        "median excess | mean excess | model ms | window / model |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rate in rates:
        step = statistics.median(w[0] for w in got[rate])
        steps = statistics.median(w[1] for w in got[rate])
        inside = statistics.median(w[2] for w in got[rate])
        extra = extra_per_arrival(step, base, steps, inside) if inside else None
        excess = [x for w in got[rate] for x in w[4]]
        cells = (
            ["-"] * 5
            if extra is None or not excess
            else [
                f"{extra * 1e3:.2f}",
                f"{statistics.median(excess) * 1e3:.2f}",
                f"{statistics.mean(excess) * 1e3:.2f}",
                f"{model_s * 1e3:.2f}",
                f"{extra / model_s:.1f}x" if model_s > 0 else "-",
            ]
        )
        print(f"| {rate:g} | {step * 1e3:.2f} | {inside:g} | " + " | ".join(cells) + " |")


async def with_replica(args, profile: DeviceProfile) -> None:
    from cato_live.deploy import load_deploy
    from cato_live.profiling.backend import started_replica
    from cato_live.provisioners.registry import make_provisioner

    os.environ.setdefault("CATO_VLLM_PYTHON", VLLM_PYTHON)  # the DEPLOY file names them
    os.environ.setdefault("CATO_TINY_MODEL", TINY_MODEL)
    d = load_deploy(Path(args.deploy))
    model = next(iter(d.models))
    served = d.served_name(model)
    if args.target:
        await measure(args.target, served, args, profile)
        return
    async with started_replica(make_provisioner(d), model) as replica:
        print(f"replica ready in {replica.cold_start_s:.1f} s at {replica.url}", file=sys.stderr, flush=True)
        await measure(replica.url, served, args, profile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deploy", default=str(ROOT / "experiments/deploy/process_cpu.yaml"))
    ap.add_argument("--target", help="a running vLLM (base URL) instead of starting a replica")
    ap.add_argument("--profile", default="cato-tiny_cpu", help="profile whose model is compared (file or name)")
    ap.add_argument("--decoders", type=int, default=4)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens of each arrival")
    ap.add_argument("--rates", default="0,10,30", help="arrivals per second (0, the baseline, is always run)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:  # the replica's provisioner pins it to the DEPLOY's first device (core 0)
        os.sched_setaffinity(0, cores[1:])
    asyncio.run(with_replica(args, load_profile(args.profile)))


if __name__ == "__main__":
    main()
