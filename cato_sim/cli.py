"""`cato-sim`: run experiments, make traces, fit device profiles.

Start-up time is part of every command: this module imports typer only, and each command
imports what it uses (rich, pandas, matplotlib...) when it runs, so `--help` and a run with
`--no-plots` never load matplotlib.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cato_core.errors import InputError, exits_on_input_error

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

app = typer.Typer(
    help="CATO simulator: SLA-aware routing and scaling of AI-coding tasks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
trace_app = typer.Typer(help="Make and import traces.", no_args_is_help=True)
profile_app = typer.Typer(help="Fit device profiles.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
app.add_typer(profile_app, name="profile")


def settle_imports(ctx: typer.Context) -> None:
    """Hide every object made so far from the cyclic garbage collector (``gc.freeze``).

    Called once a command has imported what it uses, and at exit. The libraries' hundreds of
    thousands of objects are then no longer walked by each full collection during the run,
    nor by the collections at interpreter exit (about 0.15 s with pandas loaded). Objects are
    still freed by reference counting. Only when the command owns its process (``main``
    says so through the context), never inside a test session that calls the app.
    """
    if ctx.obj and ctx.obj.get("own_process"):
        import gc

        gc.freeze()


def progress_bar(console: Console) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}", markup=False),  # set-up names as written
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def versus_strongest(summaries: dict[str, dict]) -> str | None:
    """The ``cato`` set-up against the strongest other one: the highest Goodput rate, then
    the fewer replica-seconds. None without a ``cato`` set-up and another."""
    others = {n: s for n, s in summaries.items() if n != "cato"}
    if "cato" not in summaries or not others:
        return None
    best = max(others, key=lambda n: (others[n]["goodput_rate"], -others[n]["replica_seconds"]))
    cato, base = summaries["cato"]["goodput_rate"], others[best]["goodput_rate"]
    return (
        f"cato vs the strongest baseline, {best}: Goodput rate {cato:.1%} vs {base:.1%} "
        f"({100 * (cato - base):+.1f} points)"
    )


@app.command()
@exits_on_input_error
def run(
    ctx: typer.Context,
    experiment: Annotated[Path, typer.Argument(help="experiment YAML")],
    out: Annotated[Path | None, typer.Option(help="results folder (default results/<name>)")] = None,
    seed: Annotated[int | None, typer.Option(help="overrides the experiment's seed")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: key.sub=value")] = None,
    plots: Annotated[bool, typer.Option(help="draw the comparison plots into DIR/plots, after the table")] = True,
) -> None:
    """Simulate every set-up of EXPERIMENT on one trace; write tables, summary and plots."""
    from cato_sim.experiment import load_experiment

    exp, base = load_experiment(experiment, set_ or [])
    out = out or Path("results") / exp.name
    with contextlib.ExitStack() as stack:
        worker = None
        if plots:  # before any thread starts: a worker that loads matplotlib while the run goes on
            from cato_report.plot_worker import PlotWorker

            worker = stack.enter_context(PlotWorker())
        from rich.console import Console

        from cato_report.table import summary_table
        from cato_sim.runner import run_experiment

        # emoji=False: names print as written (and rich's emoji table is never loaded)
        console = Console(stderr=True, emoji=False)
        settle_imports(ctx)
        with progress_bar(console) as progress:
            summaries = run_experiment(exp, base, out, seed, progress=progress)
        # The table first, at once; then the plots.
        title = f"{exp.name} (seed {next(iter(summaries.values()))['seed']})"
        Console(emoji=False).print(summary_table(summaries, title=title))
        headline = versus_strongest(summaries)
        if headline:
            Console(emoji=False).print(headline, markup=False)
        if worker is None:
            console.print(f"results: {out}", markup=False)
            return
        runs = {n: (out / n if len(summaries) > 1 else out) for n in summaries}
        written = worker.plot_comparison(runs, summaries, out / "plots")
    console.print(f"results: {out}  plots: {', '.join(p.name for p in written)}", markup=False)


@app.command()
@exits_on_input_error
def sweep(
    experiment: Annotated[Path | None, typer.Argument(help="experiment YAML (not with --plots-only)")] = None,
    rates: Annotated[str | None, typer.Option(help="arrival rates in tasks/s, e.g. 0.67,1.33,2")] = None,
    policies: Annotated[
        str,
        typer.Option(
            help="set-up names of the experiment, or built-ins (cato_core.presets): cato, rayserve, rayserve_llm, rayserve_vllm_example, round_robin"
        ),
    ] = "cato,rayserve,round_robin",
    seeds: Annotated[int, typer.Option(help="seeds per (policy, rate)")] = 1,
    workers: Annotated[
        int | None, typer.Option(help="parallel processes (default: CPU count); with --ray-address local: its CPUs")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="run as Ray tasks: a Ray cluster address, or 'local' to start one")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="sweep folder (default results/<name>-sweep)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: key.sub=value")] = None,
    plots_only: Annotated[
        bool, typer.Option(help="rebuild sweep.parquet, table and plots of --out from its run files")
    ] = False,
) -> None:
    """Simulate EXPERIMENT at every policy x rate x seed in parallel; write sweep.parquet and plots.

    Exit code 1 when a run failed (the others still run; see DIR/failures.json).
    """
    from rich.console import Console
    from rich.table import Table

    from cato_report.sweep_plots import goodput_table, plot_sweep
    from cato_sim.experiment import load_experiment
    from cato_sim.sweep import collect, parse_list, parse_rates, run_sweep

    console = Console(stderr=True)
    if plots_only:
        if out is None:
            raise InputError("--plots-only", "--out", "the sweep folder to redraw")
        result = collect(out)
    else:
        if experiment is None:
            raise InputError("sweep", "EXPERIMENT", "an experiment YAML (or --plots-only --out DIR)")
        if rates is None:
            raise InputError("sweep", "--rates", "arrival rates in tasks/s, e.g. 0.67,1.33,2")
        rate_list, names = parse_rates(rates), parse_list(policies, "--policies")
        exp, base = load_experiment(experiment, set_ or [])
        out = out or Path("results") / f"{exp.name}-sweep"
        with progress_bar(console) as progress:
            result = run_sweep(exp, base, out, names, rate_list, seeds, workers, ray_address, progress=progress)
    plots = plot_sweep(out, result.frame)
    if not result.frame.empty:
        good = goodput_table(result.frame)
        table = Table(title=f"Goodput rate, mean over {result.frame['seed'].nunique()} seed(s)")
        table.add_column("policy \\ rate (tasks/s)")
        for r in good.columns:
            table.add_column(f"{r:g}", justify="right")
        for policy, row in good.iterrows():
            table.add_row(policy, *("-" if v != v else f"{v:.3f}" for v in row))
        Console().print(table)
    console.print(f"results: {out / 'sweep.parquet'}  plots: {', '.join(p.name for p in plots)}")
    if result.failures:
        if plots_only:
            for f in result.failures:
                console.print(f"failed: {f['run_dir']}: {f['error']}")
        console.print(f"{len(result.failures)} run(s) failed: {out / 'failures.json'}")
        raise typer.Exit(1)


def _axis_options(pairs: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(what, item, "axis=value, e.g. load=0.9")
        out[key.strip()] = value
    return out


@app.command()
@exits_on_input_error
def explore(
    experiment: Annotated[Path | None, typer.Argument(help="experiment YAML with a 'generate' trace")] = None,
    load: Annotated[str | None, typer.Option(help="loads, fractions of measured capacity [0.3,0.6,0.9,1.1]")] = None,
    sla: Annotated[str | None, typer.Option(help="SLA multiples of the isolated baseline [1.2,2,3,5]")] = None,
    cv: Annotated[str | None, typer.Option(help="arrival gaps' CV, 1 or poisson = Poisson [1,2,8]")] = None,
    slowdown: Annotated[str | None, typer.Option(help="device slowdowns, every profile time x [1,2,4]")] = None,
    base: Annotated[
        list[str] | None, typer.Option(help="an axis' base value, e.g. load=0.9 [load=0.9 sla=3 cv=1 slowdown=1]")
    ] = None,
    pairs: Annotated[str | None, typer.Option(help="pairs of axes to vary, e.g. load:sla,load:cv [all]")] = None,
    policies: Annotated[
        str, typer.Option(help="CATO and the baselines, set-up names or presets")
    ] = "cato,round_robin,rayserve,rayserve_llm,rayserve_vllm_example",
    cato: Annotated[str, typer.Option(help="the policy the others are compared with")] = "cato",
    seeds: Annotated[int, typer.Option(help="seeds per point and policy")] = 3,
    tasks: Annotated[int, typer.Option(help="tasks per trace")] = 200,
    workers: Annotated[int | None, typer.Option(help="parallel processes (default: CPU count)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="run as Ray tasks: an address, or 'local'")] = None,
    out: Annotated[Path | None, typer.Option(help="explore folder (default results/<name>-explore)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: key.sub=value")] = None,
    resume: Annotated[bool, typer.Option(help="skip runs whose folder already holds their result")] = False,
    plots: Annotated[bool, typer.Option(help="draw the heatmaps into DIR/plots")] = True,
    report_only: Annotated[bool, typer.Option(help="rebuild table and heatmaps of --out from its files")] = False,
) -> None:
    """Map CATO's Goodput gain over the strongest baseline across load, SLA, burstiness and
    device speed; write explore.parquet, gain.md and heatmaps (cato_sim/explore.py).

    Exit code 1 when a run failed (see DIR/failures.json).
    """
    from rich.console import Console
    from rich.table import Table

    from cato_report.explore_gain import HEADER, table_rows
    from cato_sim.experiment import load_experiment
    from cato_sim.explore import collect, make_grid, run_explore, write_report
    from cato_sim.sweep import parse_list

    console = Console(stderr=True, emoji=False)
    if report_only:
        if out is None:
            raise InputError("--report-only", "--out", "the explore folder to redraw")
        result = collect(out)
    else:
        if experiment is None:
            raise InputError("explore", "EXPERIMENT", "an experiment YAML (or --report-only --out DIR)")
        values = {k: v for k, v in {"load": load, "sla": sla, "cv": cv, "slowdown": slowdown}.items() if v}
        grid = make_grid(values, _axis_options(base, "--base"), pairs)
        exp, base_dir = load_experiment(experiment, set_ or [])
        out = out or Path("results") / f"{exp.name}-explore"
        names = parse_list(policies, "--policies")
        with progress_bar(console) as progress:
            result = run_explore(
                exp, base_dir, out, grid, names, seeds, tasks, workers, ray_address, cato, resume, progress
            )
    gains, written = write_report(out, plots)
    table = Table(title="Goodput rate gain over the strongest baseline (points, 95% CI over seeds)")
    for h in [*HEADER, "gain (95% CI)"]:
        table.add_column(h, justify="left" if h == "strongest baseline" else "right")
    for cells in table_rows(gains):
        table.add_row(*cells)
    Console(emoji=False).print(table)
    console.print(f"results: {out / 'explore.parquet'}  {', '.join(p.name for p in written)}", markup=False)
    if result.failures:
        console.print(f"{len(result.failures)} run(s) failed: {out / 'failures.json'}", markup=False)
        raise typer.Exit(1)


@app.command()
@exits_on_input_error
def reproduce(
    out: Annotated[Path, typer.Option(help="where the sweeps go")] = Path("results/reproduce"),
    report: Annotated[Path, typer.Option(help="the report to write")] = Path("reports/paper.md"),
    seeds: Annotated[int, typer.Option(help="seeds per point")] = 5,
    workers: Annotated[int | None, typer.Option(help="parallel processes")] = None,
    report_only: Annotated[bool, typer.Option(help="rewrite the report from existing sweeps")] = False,
    duration_s: Annotated[
        float | None, typer.Option(help="generated traces this long (a quick check; default each experiment's)")
    ] = None,
    map_axis: Annotated[
        list[str] | None, typer.Option(help="the maps' values of an axis, e.g. load=0.5,1.1 (explore's default)")
    ] = None,
    map_tasks: Annotated[int | None, typer.Option(help="tasks per trace on the maps (explore's default)")] = None,
) -> None:
    """Run the paper's experiments as sweeps and explore maps; write the reproduction report."""
    from rich.console import Console

    from cato_sim.reproduce import run_all, write_report

    root = Path(__file__).resolve().parents[1]
    if not report_only:
        axes = _axis_options(map_axis, "--map-axis")
        with progress_bar(Console(stderr=True)) as progress:
            run_all(root, out, seeds, workers, progress, duration_s, axes, map_tasks)
    typer.echo(write_report(out, report))


@trace_app.command("generate")
@exits_on_input_error
def trace_generate(
    out: Annotated[Path, typer.Option(help="trace parquet to write")],
    rate: Annotated[float, typer.Option(help="tasks per second (Poisson)")],
    duration_s: Annotated[float | None, typer.Option(help="arrivals before this time")] = None,
    num_tasks: Annotated[int | None, typer.Option(help="number of tasks")] = None,
    mix: Annotated[
        str, typer.Option(help="task-type weights")
    ] = "completion=1,generation=1,summarization=1,translation=1",
    seed: Annotated[int, typer.Option()] = 0,
    lengths: Annotated[str, typer.Option(help="measured | prompts")] = "measured",
    with_prompt: Annotated[bool, typer.Option(help="add prompt text (lengths=prompts)")] = False,
    arrivals: Annotated[str, typer.Option(help="poisson | gamma (bursty, with --cv)")] = "poisson",
    cv: Annotated[float | None, typer.Option(help="gamma arrivals: the gaps' coefficient of variation")] = None,
) -> None:
    """Write a seeded Poisson (or gamma) trace of coding tasks."""
    from cato_traces.generate import generate_trace, save_trace

    weights = {}
    for part in filter(None, mix.split(",")):
        name, _, w = part.partition("=")
        try:
            weights[name.strip()] = float(w)
        except ValueError:
            raise InputError(
                "--mix", name.strip() or part, "type=weight pairs, e.g. completion=1,generation=2"
            ) from None
    df = generate_trace(
        rate=rate,
        duration_s=duration_s,
        num_tasks=num_tasks,
        mix=weights,
        seed=seed,
        lengths=lengths,
        with_prompt=with_prompt,
        arrivals=arrivals,
        cv=cv,
    )
    save_trace(df, out)
    typer.echo(f"{len(df)} tasks over {df['arrival_s'].max():.1f} s -> {out}")


@trace_app.command("import")
@exits_on_input_error
def trace_import(
    kind: Annotated[str, typer.Argument(help="azure | mooncake | burstgpt")],
    file: Annotated[Path, typer.Argument(help="the trace as published (CSV or JSONL)")],
    out: Annotated[Path, typer.Option(help="trace parquet to write")],
    seed: Annotated[int, typer.Option()] = 0,
    time_scale: Annotated[float, typer.Option(help="multiplies arrival times (0.5 = twice as fast)")] = 1.0,
    mapping: Annotated[str, typer.Option(help="task types: lengths (by token shape) | mix")] = "lengths",
    mix: Annotated[
        str | None, typer.Option(help="type weights for --mapping mix, e.g. completion=1,generation=2")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="keep the first N requests")] = None,
) -> None:
    """Convert a public request trace to a trace of coding tasks (cato_traces.importers)."""
    from cato_traces.files import write_trace
    from cato_traces.importers import import_trace, parse_mix, summary

    df = import_trace(
        kind,
        file,
        seed=seed,
        time_scale=time_scale,
        mapping=mapping,
        mix=parse_mix(mix) if mix is not None else None,
        limit=limit,
    )
    write_trace(df, out)
    typer.echo(f"{summary(df)} -> {out}")


@profile_app.command("fit")
@exits_on_input_error
def profile_fit(
    csv: Annotated[Path, typer.Argument(help="Vidur mlp.csv (per-operator timings)")],
    out: Annotated[Path, typer.Option(help="profile YAML to write")],
    name: Annotated[str | None, typer.Option()] = None,
    arch: Annotated[str, typer.Option(help="model architecture")] = "codellama-7b",
    device: Annotated[str, typer.Option(help="device spec")] = "a100",
    tensor_parallel: Annotated[int, typer.Option()] = 1,
    cold_start_s: Annotated[float, typer.Option()] = 20.0,
) -> None:
    """Fit a device profile from operator timings (linear part) plus modelled attention."""
    from cato_profiles import fit as pf

    if arch not in pf.MODELS:
        raise InputError("--arch", arch, f"one of {sorted(pf.MODELS)}")
    if device not in pf.DEVICES:
        raise InputError("--device", device, f"one of {sorted(pf.DEVICES)}")
    prof = pf.fit_vidur_profile(
        csv,
        name=name or out.stem,
        model=pf.MODELS[arch].name,
        device=pf.DEVICES[device].name,
        tensor_parallel=tensor_parallel,
        arch=pf.MODELS[arch],
        spec=pf.DEVICES[device],
        cold_start_s=cold_start_s,
        cold_start_basis="given on the command line",
    )
    typer.echo(pf.write_profile(prof, out))


@profile_app.command("build-shipped")
@exits_on_input_error
def profile_build_shipped(
    data_dir: Annotated[Path, typer.Option()] = Path(__file__).parents[1] / "data",
    out_dir: Annotated[Path, typer.Option()] = Path(__file__).parents[1] / "cato_profiles",
) -> None:
    """Regenerate the shipped profiles from the copied Vidur data."""
    from cato_profiles.fit import build_shipped_profiles

    for p in build_shipped_profiles(data_dir, out_dir):
        typer.echo(p)


def main() -> None:
    import gc

    try:
        app(obj={"own_process": True})
    finally:
        gc.freeze()  # nothing left to collect: spare the exit its walk over every object
