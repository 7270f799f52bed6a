"""`cato-live profile`: measure a replica of a DEPLOY's model and write its device profile.

    cato-live profile DEPLOY.yaml --model NAME --out PROFILE.yaml [--target URL]
        [--name N] [--device TEXT] [--repeats N] [--cold-start-s S] [--vocab-size N] [--seed N]

Without --target, one replica starts through the DEPLOY's provisioner (the time it takes to
be ready is the profile's cold_start_s) and stops at the end, also on Ctrl-C. With --target,
an OpenAI-compatible vLLM already running is measured (cold_start_s: --cold-start-s, else
the DEPLOY profile's). Then the grid (cato_live.profiling.grid) is timed and the step model
fitted (cato_profiles.fit.fit_measured_profile), and lone calls through an in-process CATO
gateway over the replica give the profile's gateway_latency_s (cato_live.profiling.gateway_hop).

Exit codes: 0 written; 1 the replica did not start or could not be measured; 2 bad input
(one line naming the file or option, the field and what was expected); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from cato_core.errors import InputError, exits_on_input_error
from cato_live.profiling.grid import REPEATS

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


@exits_on_input_error
def profile(
    deploy: Annotated[Path, typer.Argument(help="DEPLOY.yaml: the model, its provisioner and max_num_seqs")],
    model: Annotated[str, typer.Option(help="the DEPLOY model to profile (a key of its models)")],
    out: Annotated[Path, typer.Option(help="the profile YAML to write")],
    target: Annotated[
        str | None, typer.Option(help="measure this running vLLM (base URL) instead of starting a replica")
    ] = None,
    name: Annotated[str | None, typer.Option(help="profile name (default: the --out file's stem)")] = None,
    device: Annotated[str | None, typer.Option(help="device description (default: from the provisioner)")] = None,
    repeats: Annotated[int, typer.Option(help="rounds over the grid: samples a point (medians)")] = REPEATS,
    cold_start_s: Annotated[
        float | None, typer.Option(help="with --target: cold start to record (default: the DEPLOY profile's)")
    ] = None,
    vocab_size: Annotated[int, typer.Option(help="prompt token IDs are drawn below this")] = 2000,
    seed: Annotated[
        int | None, typer.Option(help="seeds the prompts (default: fresh, so no prefix-cache hits)")
    ] = None,
) -> None:
    """Measure a replica's step times, fit the device profile model and write it to --out."""
    from cato_live.deploy import load_deploy
    from cato_live.replay.cli import check_target

    d = load_deploy(deploy)
    if model not in d.models:
        raise InputError(str(deploy), "models", f"a model named {model!r} (--model); it has {sorted(d.models)}")
    for opt, value, ok, expect in (
        ("--repeats", repeats, repeats >= 1, "an integer >= 1"),
        ("--vocab-size", vocab_size, vocab_size > 100, "an integer > 100"),
        ("--cold-start-s", cold_start_s, cold_start_s is None or cold_start_s >= 0, "seconds >= 0"),
    ):
        if not ok:
            raise InputError(opt, str(value), expect)
    if out.is_dir():
        raise InputError(str(out), "--out", "a file path (it is a folder)")
    provisioner = None
    if target is not None:
        target = check_target(target)
    else:
        from cato_live.provisioners.registry import make_provisioner

        provisioner = make_provisioner(d)  # last: it may hold resources
    args = dict(
        deploy=deploy,
        d=d,
        model=model,
        out=out,
        target=target,
        name=name or out.stem,
        device=device,
        repeats=repeats,
        cold_start_s=cold_start_s,
        vocab_size=vocab_size,
        seed=seed,
    )
    raise typer.Exit(asyncio.run(_main(provisioner, args)))


async def _main(provisioner, args: dict) -> int:
    """Run the profile as a task that Ctrl-C / SIGTERM cancel; the replica stops either way."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await _run(provisioner, **args)
    except asyncio.CancelledError:
        print("interrupted; the replica was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(provisioner, *, deploy, d, model, out, target, name, device, repeats, cold_start_s, vocab_size, seed):
    import contextlib

    from rich.console import Console

    from cato_live.profiling.backend import (
        Replica,
        ReplicaDidNotStart,
        device_text,
        host_cpu,
        server_facts,
        started_replica,
    )
    from cato_live.profiling.gateway_hop import PAIRS, measure_gateway_hop
    from cato_live.profiling.grid import design_grid
    from cato_live.profiling.measure import Client, MeasureError, Profiler
    from cato_live.progress_bar import status_progress
    from cato_profiles.fit import MeasuredSteps, fit_measured_profile, write_profile

    console = Console(stderr=True)
    served, spec = d.served_name(model), d.models[model]
    headers = {"Authorization": f"Bearer {d.token}"} if (target and d.token) else {}
    t0 = time.perf_counter()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    progress = status_progress(console)
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(progress)
        if target is None:
            bar = progress.add_task(f"starting a replica of {model}", total=None, status="")
            try:
                replica = await stack.enter_async_context(started_replica(provisioner, model))
            except ReplicaDidNotStart as e:
                progress.stop()
                console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
                return EXIT_FAILED
            progress.update(bar, total=1, completed=1, status=f"ready in {replica.cold_start_s:.1f} s")
        else:
            replica = Replica(target, None)
        facts = await server_facts(replica.url, served, headers)
        grid = design_grid(spec.max_num_seqs, facts.max_model_len or 2048, repeats)
        bar = progress.add_task("measuring", total=grid.points * grid.repeats, status="warm-up")
        client = Client(replica.url, served, vocab_size, seed, headers=headers)
        stack.push_async_callback(client.aclose)
        profiler = Profiler(
            client, grid, lambda label: progress.update(bar, advance=1, status=label), target is not None
        )
        try:
            points = await profiler.run()
            progress.update(bar, status="the gateway's hop")
            hop_bar = progress.add_task("through the gateway", total=PAIRS, status="")
            hop = await measure_gateway_hop(d, model, client, lambda: progress.update(hop_bar, advance=1))
        except MeasureError as e:
            progress.stop()
            console.print(f"error: measuring {replica.url}: {e}", markup=False, highlight=False, soft_wrap=True)
            return EXIT_FAILED
        progress.update(bar, status="done; stopping the replica" if target is None else "done")
    measured_s = time.perf_counter() - t0

    if replica.cold_start_s is not None:
        cold, cold_basis = replica.cold_start_s, f"measured: provisioner start to ready, {replica.cold_start_s:.1f} s"
    else:
        cold = cold_start_s if cold_start_s is not None else d.profile(model).cold_start_s
        cold_basis = (
            f"not measured (--target); {'--cold-start-s' if cold_start_s is not None else 'the DEPLOY profile'}"
        )
    backend = f"vLLM {facts.version} at {replica.url}" + (
        f", started by the DEPLOY's {d.provisioner.kind} provisioner" if target is None else " (--target)"
    )
    basis = [
        f"Measured by `cato-live profile {deploy} --model {model}` on {when} in {measured_s:.0f} s.",
        f"Backend: {backend}; served model {served!r}, max_num_seqs {spec.max_num_seqs}, "
        f"max_model_len {facts.max_model_len}.",
        f"Host: {host_cpu()}; load average {load:.2f} at the start"
        + (" (a shared machine: re-measure on a quiet one)." if load > 0.5 else "."),
        f"Grid: {grid.describe()}.",
        "Times at the client from streamed completions (token-ID prompts, ignore_eos, min_tokens = "
        "max_tokens, return_token_ids): TTFT of lone prompts; decode: the mean time per token while "
        "the batch was whole (the window's time over the tokens made in it); mixed: the decoders' gap "
        "that ended with the prompt's first token, unless a chunk less than 0.2 ms away shows a stall.",
        *(f"Left out: {why}." for why in profiler.skipped),
        *(
            f"Medians, {part}: "
            + ", ".join(
                f"{p.label} {p.seconds * 1e3:.3f} ms" + (f" (C {p.decode_ctx:g})" if p.decode_ctx else "")
                for p in points
                if p.part == part
            )
            + "."
            for part in dict.fromkeys(p.part for p in points)
        ),
        f"kv_capacity_tokens: {facts.kv_basis}.",
        f"{hop.describe(d.router)}.",
    ]
    steps = MeasuredSteps(
        [p.part for p in points],
        [p.tokens for p in points],
        [p.prefill_attn for p in points],
        [p.decode_ctx for p in points],
        [p.seqs for p in points],
        [p.seconds for p in points],
    )
    prof = fit_measured_profile(
        steps,
        name=name,
        model=served,
        device=device or device_text(d, replica.meta),
        kv_capacity_tokens=facts.kv_capacity_tokens or d.profile(model).kv_capacity_tokens,
        cold_start_s=cold,
        cold_start_basis=cold_basis,
        basis=basis,
    )
    prof = dataclasses.replace(prof, gateway_latency_s=float(f"{hop.seconds:.6g}"))
    write_profile(prof, out, generated_by="cato-live profile")
    console.print(
        f"wrote {out}: floor {prof.linear_floor_s * 1e3:.3f} ms, overhead {prof.overhead_s * 1e3:.3f} ms, "
        f"per token {prof.per_token_s * 1e6:.3f} us, per sequence {prof.per_seq_s * 1e3:.3f} ms, "
        f"prefill_attn {prof.prefill_attn_s:.3g} s, "
        f"decode_ctx {prof.decode_ctx_s:.3g} s, request latency {prof.request_latency_s * 1e3:.2f} ms, "
        f"gateway latency {prof.gateway_latency_s * 1e3:.2f} ms, "
        f"front end on a busy engine {prof.frontend_cpu_s * 1e3:.2f} ms, "
        f"cold start {prof.cold_start_s:.1f} s ({time.perf_counter() - t0:.0f} s)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return 0
