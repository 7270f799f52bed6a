"""`cato-live validate`: one trace simulated and replayed live, and how far apart they are.

    cato-live validate TRACE.parquet --deploy DEPLOY.yaml --out DIR [--profile PROFILE]
        [--repeat-live] [--seed N] [--target URL]

DIR/sim     the simulator's run of TRACE with the DEPLOY's models, policies, engine limits,
            tools and task types (cato_validate.deploy_experiment), through cato_sim's runner
DIR/live    TRACE replayed through the CATO gateway on the DEPLOY's real replicas (started
            here, stopped at the end), as `cato-live replay --deploy` does
DIR/live2   with --repeat-live, a second live replay: how much live runs differ themselves
            --target URL: the live side replays against a server that is already running
            instead (a Ray Serve LLM app, say, whose policies the DEPLOY's ``preset`` names),
            so the simulator's model of another stack is checked against the stack itself
DIR/sim_at_live_speed   the simulator again, its engines as slow as the live engine ran
            against its profile (decode of the calls that ran alone: cato_report.engine_speed;
            routing, SLAs and deadlines still from the profile); skipped with fewer than
            MIN_LONE_CALLS such calls. Its error against live is the model's, with the machine's
            drift between profiling and replay taken out; the error of DIR/sim carries both
DIR/fidelity.json, DIR/fidelity.md, DIR/plots/   the comparison (cato_report.fidelity)

--profile (a file or a shipped name) replaces the DEPLOY's profile of the model it was made
for, on both sides (cato_validate.profile_override); with --target, whose clients do not go
through CATO's gateway, the profiles' gateway_latency_s is 0 on both sides. --seed (default:
the DEPLOY's) seeds the simulator, the gateway's router and the replay's prompts and tool
times.

Exit codes: 0 the report is written (whether or not the goals are met); 1 a live run failed
(its replicas did not start: the error with the replica's log tail) or a run lost a task;
2 bad input (one line: file, field, what was expected); 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

from cato_core.errors import InputError, exits_on_input_error

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
MIN_LONE_CALLS = 3  # fewer lone calls than this: no speed worth re-simulating at
VERSIONED = ("cato", "simpy", "httpx", "numpy", "pandas", "pyarrow", "pydantic", "matplotlib")


def _capacity(provisioner, deploy) -> int | None:
    """Most replicas the provisioner can run at once (None: no known limit). Its pool is shared
    by the models, so the largest figure, not their sum."""
    caps = [provisioner.capacity(m) for m in deploy.models]
    return None if any(c is None for c in caps) else max(caps)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fail(message: str, code: int) -> typer.Exit:
    import sys

    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


@exits_on_input_error
def validate(
    trace: Annotated[Path, typer.Argument(help="trace parquet (cato_traces.files)")],
    deploy: Annotated[Path, typer.Option(help="DEPLOY.yaml: models, policies and the replicas to run live")],
    out: Annotated[Path, typer.Option(help="results folder: sim/, live/, fidelity.json, fidelity.md, plots/")],
    profile: Annotated[
        str | None, typer.Option(help="device profile (file or shipped name) in place of its model's in DEPLOY")
    ] = None,
    repeat_live: Annotated[bool, typer.Option(help="replay live twice: the live-vs-live spread")] = False,
    seed: Annotated[int | None, typer.Option(help="seed of both sides (default: the DEPLOY's)")] = None,
    target: Annotated[
        str | None, typer.Option(help="replay live against this running server, not the DEPLOY's replicas")
    ] = None,
) -> None:
    """Simulate TRACE as DEPLOY would serve it, replay it live on DEPLOY's replicas, compare.

    Exit code 0: report written; 1: a live run failed or lost a task; 2: bad input; 130: interrupted.
    """
    from rich.console import Console

    from cato_core.profile import load_profile
    from cato_live.deploy import load_deploy
    from cato_live.provisioners.registry import make_provisioner
    from cato_live.replay.cli import check_target
    from cato_traces.files import read_trace
    from cato_validate.deploy_experiment import with_tools
    from cato_validate.profile_override import override_profile, without_gateway_latency

    d = load_deploy(deploy)
    if profile is not None:
        d = override_profile(d, load_profile(profile), profile)
    if seed is not None and seed < 0:
        raise InputError("--seed", str(seed), "an integer >= 0")
    d = d.model_copy(update={"seed": d.seed if seed is None else seed})
    if target is not None:
        target = check_target(target)
        d = without_gateway_latency(d)
    task_types = with_tools(d.task_types, d.tools)
    df = read_trace(trace, set(task_types))
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "--out", "a folder (it is a file)")
    capacity = _capacity(make_provisioner(d), d)  # its fields are checked before anything runs

    runs = {"sim": out / "sim", "live": out / "live"} | ({"live2": out / "live2"} if repeat_live else {})
    console = Console(stderr=True, emoji=False)
    try:
        _simulate(d, trace, runs["sim"], capacity, console)
    except KeyboardInterrupt:
        raise _fail("interrupted while simulating", EXIT_INTERRUPTED) from None
    for side in ("live", "live2"):
        if side in runs:
            _replay_live(d, df, task_types, trace, runs[side], side, console, target)
    slowdown = _live_slowdown(d, runs["live"])
    if slowdown is not None:
        runs["sim_at_live_speed"] = out / "sim_at_live_speed"
        try:
            _simulate(d, trace, runs["sim_at_live_speed"], capacity, console, slowdown)
        except KeyboardInterrupt:
            raise _fail("interrupted while simulating", EXIT_INTERRUPTED) from None
    _report(trace, deploy, profile, d, runs, out, console, target)


def _live_slowdown(d, live: Path) -> float | None:
    """How many times slower than its profile the live engine decoded alone (None: too few calls)."""
    from cato_report.engine_speed import engine_speed

    speed = engine_speed(live / "nodes.parquet", {m: d.profile(m) for m in d.models})
    if speed["lone_calls"] < MIN_LONE_CALLS or speed["decode_ratio"] is None:
        return None
    return speed["decode_ratio"]


def _simulate(d, trace: Path, where: Path, capacity: int | None, console, slowdown: float = 1.0) -> None:
    from cato_sim.cli import progress_bar
    from cato_sim.runner import run_experiment
    from cato_validate.deploy_experiment import experiment_from_deploy

    at = "" if slowdown == 1.0 else f" at the live engine's speed (x{slowdown:.2f} its profile's times)"
    console.rule(f"simulating{at}", style="dim")
    exp = experiment_from_deploy(d, trace, d.seed, where / "profiles", capacity, slowdown)
    with progress_bar(console) as progress:
        run_experiment(exp, trace.parent, where, d.seed, progress=progress)


def _replay_live(d, df, task_types, trace: Path, where: Path, side: str, console, target: str | None) -> None:
    """One live replay, through the in-process gateway (a gateway that did not start ends the
    run) or, given ``target``, against that server."""
    from cato_live.replay.cli import replay_trace
    from cato_live.replay.replayer import ReplayConfig

    start = f"against {target}" if target else "the replicas start first"
    console.rule(f"replaying live ({side}): {start}", style="dim")
    model = d.default_model
    cfg = ReplayConfig(
        target=target or "",
        model=model,
        profile=d.profile(model),
        task_types=task_types,
        seed=d.seed,
        profiles={m: d.profile(m) for m in d.models},
        headers={"Authorization": f"Bearer {d.token}"} if d.token else {},
    )
    args = {
        "trace": str(trace),
        "target": target,
        "deploy": None if target else d.source,
        "out": str(where),
        "model": model,
        "time_scale": cfg.time_scale,
        "profile": d.profile(model).name,
        "seed": d.seed,
        "limit": None,
        "timeout_s": cfg.timeout_s,
        "vocab_size": cfg.vocab_size,
        "connections": cfg.connections,
        "tasks": len(df),
        "validate": side,
    }
    run = replay_trace(df, where, cfg, args, None if target else d, console)
    if run.startup_error is not None:
        raise _fail(f"{d.source}: {side} run: {run.startup_error}", EXIT_FAILED)
    if run.result.interrupted:
        raise _fail(f"{side} run interrupted; its tables in {where} hold what finished", EXIT_INTERRUPTED)
    if target and not run.result.by_status.get("ok"):  # nothing served: no figures to compare
        raise _fail(f"--target {target}: {side} run: no task succeeded ({_first_error(where)})", EXIT_FAILED)


def _first_error(where: Path) -> str:
    import pyarrow.parquet as pq

    errors = pq.read_table(where / "tasks.parquet", columns=["error"])["error"].drop_null()
    return errors[0].as_py() if len(errors) else "no error recorded"


def _report(
    trace: Path, deploy: Path, profile: str | None, d, runs: dict[str, Path], out: Path, console, target: str | None
) -> None:
    import pyarrow.parquet as pq

    from cato_core.provenance import versions
    from cato_report.fidelity import LostTasks, check_every_task_once, fidelity
    from cato_report.fidelity_markdown import fidelity_markdown
    from cato_report.fidelity_plots import plot_fidelity

    with pq.ParquetFile(trace) as f:  # the trace file itself, whatever the runs made of it
        ids = [str(i) for i in f.read(columns=["task_id"])["task_id"].to_pylist()]
    try:
        for where in runs.values():
            check_every_task_once(ids, where / "tasks.parquet")
    except LostTasks as e:
        raise _fail(str(e), EXIT_FAILED) from None
    inputs = {
        "trace": str(trace),
        "deploy": str(deploy),
        "profile": profile or "the DEPLOY's",
        "seed": d.seed,
        "live target": target or "the DEPLOY's replicas, through the CATO gateway",
        "tasks": len(ids),
        **{f"{side} run": str(where) for side, where in runs.items()},
    }
    profiles = {m: d.profile(m) for m in d.models}
    report = fidelity(runs["sim"], runs["live"], runs.get("live2"), profiles, runs.get("sim_at_live_speed"))
    report = {
        "inputs": {
            **inputs,
            "trace_sha256": _sha256(trace),
            "profiles": {m: dataclasses.asdict(d.profile(m)) for m in d.models},
            "versions": versions(VERSIONED),
        },
        **report,
    }
    (out / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n")
    md = fidelity_markdown(report, inputs)
    (out / "fidelity.md").write_text(md)
    console.rule("plotting", style="dim")
    written = plot_fidelity(runs, out / "plots")
    print(md)  # as written to fidelity.md: a wide table reads better unwrapped than re-laid out
    console.print(f"results: {out}  plots: {', '.join(p.name for p in written)}", markup=False)
