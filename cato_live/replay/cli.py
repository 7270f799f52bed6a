"""`cato-live replay`: the command, its argument checks, progress bar, summary and exit code.

    cato-live replay TRACE.parquet (--target URL | --deploy DEPLOY.yaml) --out DIR
        [--model NAME] [--time-scale X] [--profile P] [--seed N] [--limit N] [--timeout-s S]
        [--vocab-size N] [--connections N] [--token T]

--target: any OpenAI-compatible server (vLLM, a CATO gateway, the emulator). --deploy: the
CATO gateway runs in this process from DEPLOY.yaml (its replicas started first, stopped at
the end); its task types, per-model profiles, default model and token are used.
Baselines and deadlines come from --profile for models without a profile of their own.

Exit codes: 0 every task ok; 1 the replay ran to the end but some task failed or timed out
(e.g. the target refused connections: every task ``failed``; or --deploy's gateway did not
start); 2 bad input (one line on stderr naming the file or option, the field and what was
expected); 130 stopped by Ctrl-C (SIGINT) or SIGTERM: the tables are written, unfinished
tasks marked ``cancelled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cato_core.errors import InputError, exits_on_input_error

if TYPE_CHECKING:  # imported when a replay runs: httpx and pandas load slowly
    from cato_live.replay.replayer import ReplayConfig, ReplayResult

DEFAULT_PROFILE = "codellama-7b_a100"
EXIT_PROBLEMS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130


def check_target(url: str) -> str:
    """The base URL of an OpenAI-compatible server (a trailing /v1 is dropped)."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InputError("--target", url, "an http:// or https:// URL such as http://127.0.0.1:8000")
    base = url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


class GatewayNotStarted(Exception):
    """--deploy: the gateway did not come up; every task ends with ``status``. ``detail``: the
    whole story (a replica's error with its log tail), where ``reason`` is one line."""

    def __init__(self, status: str, reason: str, url: str, detail: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.url, self.detail = status, reason, url, detail or reason


@dataclass
class DeployedGateway:
    url: str
    now: Callable[[], float]  # the gateway's clock (its replicas table is on it)


@contextlib.asynccontextmanager
async def deployed_gateway(deploy, provisioner, stopped: asyncio.Event):
    """--deploy: the CATO gateway (cato_live.gateway.app) in this process, on a free port of
    DEPLOY's host: replicas first (as `cato-live serve` does), then HTTP; stopped and its
    replicas released on exit. A set ``stopped`` (Ctrl-C) while replicas start, or a replica
    that does not start, raises GatewayNotStarted."""
    import uvicorn

    from cato_live.gateway.app import Gateway, create_app
    from cato_live.gateway.fleet import StartupError
    from cato_live.provisioners.vllm_process import free_port

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the replay's handlers on the loop stay in charge
            yield

    port = free_port(deploy.host)
    deploy = deploy.model_copy(update={"port": port})
    host = "127.0.0.1" if deploy.host in ("0.0.0.0", "::", "") else deploy.host
    url = f"http://{host}:{port}"
    gw = Gateway(deploy, provisioner)
    try:
        start = asyncio.create_task(gw.start())
        stop_wait = asyncio.create_task(stopped.wait())
        await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if not start.done():
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            raise GatewayNotStarted("cancelled", "replay stopped while the gateway's replicas were starting", url)
        try:
            start.result()
        except StartupError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__  # the log tail is in its log
            raise GatewayNotStarted("failed", f"the gateway did not start: {first}", url, str(e)) from None
        server = _Server(
            uvicorn.Config(
                create_app(deploy, gateway=gw), host=deploy.host, port=port, log_level="warning", lifespan="on"
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                raise GatewayNotStarted("failed", f"the gateway's HTTP server did not start on {url}", url)
            await asyncio.sleep(0.02)
        try:
            yield DeployedGateway(url, gw.fleet.now)
        finally:
            server.should_exit = True
            await asyncio.gather(serving, return_exceptions=True)
    finally:
        await gw.close()


@dataclass
class ReplayRun:
    """One replay done: its config (target resolved), result and summary.json; with a DEPLOY
    whose gateway did not start, why (the replica's error with its log tail)."""

    cfg: ReplayConfig
    result: ReplayResult
    summary: dict
    startup_error: str | None


def replay_trace(trace, out: Path, cfg: ReplayConfig, args: dict, deploy=None, console=None) -> ReplayRun:
    """Replay ``trace`` (as cato_traces.files.read_trace returns it) into ``out`` and write its
    summary.json; with ``deploy`` (a checked Deploy), through the CATO gateway in this process,
    its replicas started here and stopped at the end. ``args``: the resolved arguments to save
    (the target and model actually used are added). Progress goes to ``console`` (stderr)."""
    from rich.console import Console

    from cato_live.replay.replayer import write_summary

    provisioner = None
    if deploy is not None:
        from cato_live.provisioners.registry import make_provisioner

        provisioner = make_provisioner(deploy)  # may hold resources: after every other check
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    cfg, result, early = asyncio.run(_replay(trace, out, cfg, deploy, provisioner, args, console))
    summary = write_summary(out, args, cfg, result, time.perf_counter() - t0)
    return ReplayRun(cfg, result, summary, early.detail if early is not None else None)


@exits_on_input_error
def replay(
    trace: Annotated[Path, typer.Argument(help="trace parquet (cato_traces.files)")],
    out: Annotated[Path, typer.Option(help="results folder: tasks/nodes/replicas.parquet, summary.json")],
    target: Annotated[str | None, typer.Option(help="base URL of vLLM, a CATO gateway or the emulator")] = None,
    deploy: Annotated[Path | None, typer.Option(help="DEPLOY.yaml: run the CATO gateway in-process")] = None,
    model: Annotated[
        str | None, typer.Option(help="model to request (default: DEPLOY's default model, else the target's first)")
    ] = None,
    time_scale: Annotated[float, typer.Option(help="multiplies arrival times (0.5 = twice as fast)")] = 1.0,
    profile: Annotated[
        str, typer.Option(help="device profile for baselines and deadlines (with --deploy: models without their own)")
    ] = DEFAULT_PROFILE,
    seed: Annotated[int, typer.Option(help="seeds prompt token IDs and tool times")] = 0,
    limit: Annotated[int | None, typer.Option(help="replay the first N tasks only")] = None,
    timeout_s: Annotated[float, typer.Option(help="per-request limit; past it the task is 'timeout'")] = 300.0,
    vocab_size: Annotated[int, typer.Option(help="prompt token IDs are drawn below this")] = 2000,
    connections: Annotated[int, typer.Option(help="HTTP connections the client may open at once")] = 1024,
    token: Annotated[
        str | None, typer.Option(envvar="CATO_LIVE_TOKEN", help="bearer token for a gateway that wants one")
    ] = None,
) -> None:
    """Replay TRACE open loop against a live endpoint; write the simulator's result tables.

    Exit code 0: every task ok; 1: some failed or timed out; 2: bad input; 130: interrupted.
    """
    from rich.console import Console

    from cato_core.profile import load_profile
    from cato_core.tasks import default_task_types
    from cato_live.replay.replayer import MIN_TOKEN_ID, ReplayConfig
    from cato_report.table import summary_table
    from cato_traces.files import read_trace

    if (target is None) == (deploy is None):
        raise InputError("replay", "--target/--deploy", "exactly one of them")
    if target is not None:
        target = check_target(target)
    for name, value, ok, expect in (
        ("--time-scale", time_scale, time_scale > 0, "a number > 0"),
        ("--timeout-s", timeout_s, timeout_s > 0, "seconds > 0"),
        ("--vocab-size", vocab_size, vocab_size > MIN_TOKEN_ID, f"an integer > {MIN_TOKEN_ID}"),
        ("--connections", connections, connections >= 1, "an integer >= 1"),
        ("--limit", limit, limit is None or limit >= 1, "an integer >= 1"),
    ):
        if not ok:
            raise InputError(name, str(value), expect)
    prof = load_profile(profile)
    d = None
    profiles = {}
    if deploy is not None:
        from cato_live.deploy import load_deploy

        d = load_deploy(deploy)
        task_types, profiles = d.task_types, {m: d.profile(m) for m in d.models}
        model = model or d.default_model
        token = token or d.token
    else:
        task_types = default_task_types()
    df = read_trace(trace, set(task_types))
    if limit is not None:
        df = df.iloc[:limit].reset_index(drop=True)
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "--out", "a folder (it is a file)")

    args = {
        "trace": str(trace),
        "target": target,
        "deploy": str(deploy) if deploy else None,
        "out": str(out),
        "model": model,
        "time_scale": time_scale,
        "profile": profile,
        "seed": seed,
        "limit": limit,
        "timeout_s": timeout_s,
        "vocab_size": vocab_size,
        "connections": connections,
        "tasks": len(df),
    }
    cfg = ReplayConfig(
        target=target or "",
        model=model,
        profile=prof,
        task_types=task_types,
        time_scale=time_scale,
        seed=seed,
        timeout_s=timeout_s,
        vocab_size=vocab_size,
        connections=connections,
        profiles=profiles,
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    console = Console(stderr=True)
    run = replay_trace(df, out, cfg, args, d, console)
    cfg, result, summary = run.cfg, run.result, run.summary
    Console().print(summary_table({"replay": summary}, title=f"replay of {trace.name} -> {cfg.target} (seed {seed})"))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.by_status.items()))
    console.print(f"results: {out}  tasks: {counts}" + ("  (interrupted)" if result.interrupted else ""))
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.by_status.get("failed") or result.by_status.get("timeout"):
        raise typer.Exit(EXIT_PROBLEMS)


async def _replay(df, out, cfg, deploy, provisioner, args, console):
    """Run the replay (with --deploy: inside the gateway's lifetime); Ctrl-C/SIGTERM stop it.

    Returns the config (target resolved), the result and GatewayNotStarted if it did not start."""
    from cato_live.progress_bar import status_progress
    from cato_live.replay.replayer import Replayer

    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    replayers: list[Replayer] = []

    def on_signal() -> None:
        stopped.set()
        for r in replayers:
            r.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with contextlib.AsyncExitStack() as stack:
            gateway_now, early = None, None
            if deploy is not None:
                try:
                    gw = await stack.enter_async_context(deployed_gateway(deploy, provisioner, stopped))
                    cfg, gateway_now = dataclasses.replace(cfg, target=gw.url), gw.now
                except GatewayNotStarted as e:
                    cfg, early = dataclasses.replace(cfg, target=e.url), e
                    console.print(f"error: {e.reason}")
                args["target"] = cfg.target
            progress = status_progress(console)
            counts: dict[str, int] = {}
            with progress:
                bar = progress.add_task("replay", total=len(df), status="")

                def tick(status: str) -> None:
                    counts[status] = counts.get(status, 0) + 1
                    progress.update(bar, advance=1, status=" ".join(f"{k} {v}" for k, v in sorted(counts.items())))

                replayer = Replayer(df, cfg, out, on_task_done=tick, gateway_now=gateway_now)
                replayers.append(replayer)
                if stopped.is_set():
                    replayer.stop()
                if early is not None and early.status == "failed":
                    result = replayer.abandon("failed", early.reason)
                else:
                    result = await replayer.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if result.model is None and not result.interrupted and early is None:
        console.print(f"warning: {cfg.target}/v1/models did not answer; the requests named no model")
    args["model_resolved"] = result.model
    return cfg, result, early


def main() -> None:
    """Run `replay` alone (``python -m cato_live.replay.cli``); `cato-live replay` is the same command."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(replay)
    app()


if __name__ == "__main__":
    main()
