"""`cato-sim`: run experiments, make traces, fit device profiles."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cato_core.errors import InputError

app = typer.Typer(help="CATO simulator: SLA-aware routing and scaling of AI-coding tasks.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
trace_app = typer.Typer(help="Make and import traces.", no_args_is_help=True)
profile_app = typer.Typer(help="Fit device profiles.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
app.add_typer(profile_app, name="profile")


def input_errors(fn):
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


@app.command()
@input_errors
def run(
    experiment: Annotated[Path, typer.Argument(help="experiment YAML")],
    out: Annotated[Optional[Path], typer.Option(help="results folder (default results/<name>)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="overrides the experiment's seed")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override: key.sub=value")] = None,
) -> None:
    """Simulate every set-up of EXPERIMENT on one trace; write tables, summary and plots."""
    from cato_core.plots import plot_comparison
    from cato_core.table import summary_table
    from cato_sim.experiment import load_experiment
    from cato_sim.runner import run_experiment

    exp, base = load_experiment(experiment, set_ or [])
    out = out or Path("results") / exp.name
    console = Console(stderr=True)
    with progress_bar(console) as progress:
        summaries = run_experiment(exp, base, out, seed, progress=progress)
    runs = {n: (out / n if len(summaries) > 1 else out) for n in summaries}
    plots = plot_comparison(runs, summaries, out / "plots")
    Console().print(summary_table(summaries, title=f"{exp.name} (seed {next(iter(summaries.values()))['seed']})"))
    console.print(f"results: {out}  plots: {', '.join(p.name for p in plots)}")


@trace_app.command("generate")
@input_errors
def trace_generate(
    out: Annotated[Path, typer.Option(help="trace parquet to write")],
    rate: Annotated[float, typer.Option(help="tasks per second (Poisson)")],
    duration_s: Annotated[Optional[float], typer.Option(help="arrivals before this time")] = None,
    num_tasks: Annotated[Optional[int], typer.Option(help="number of tasks")] = None,
    mix: Annotated[str, typer.Option(help="task-type weights")] = "completion=1,generation=1,summarization=1,translation=1",
    seed: Annotated[int, typer.Option()] = 0,
    lengths: Annotated[str, typer.Option(help="measured | prompts")] = "measured",
    with_prompt: Annotated[bool, typer.Option(help="add prompt text (lengths=prompts)")] = False,
) -> None:
    """Write a seeded Poisson trace of coding tasks."""
    from cato_sim.trace_gen import generate_trace, save_trace

    weights = {}
    for part in filter(None, mix.split(",")):
        name, _, w = part.partition("=")
        try:
            weights[name.strip()] = float(w)
        except ValueError:
            raise InputError("--mix", name.strip() or part, "type=weight pairs, e.g. completion=1,generation=2") from None
    df = generate_trace(rate=rate, duration_s=duration_s, num_tasks=num_tasks, mix=weights,
                        seed=seed, lengths=lengths, with_prompt=with_prompt)
    save_trace(df, out)
    typer.echo(f"{len(df)} tasks over {df['arrival_s'].max():.1f} s -> {out}")


@trace_app.command("import")
@input_errors
def trace_import(
    kind: Annotated[str, typer.Argument(help="azure | mooncake | burstgpt")],
    file: Annotated[Path, typer.Argument(help="the trace as published (CSV or JSONL)")],
    out: Annotated[Path, typer.Option(help="trace parquet to write")],
    seed: Annotated[int, typer.Option()] = 0,
    time_scale: Annotated[float, typer.Option(help="multiplies arrival times (0.5 = twice as fast)")] = 1.0,
    mapping: Annotated[str, typer.Option(help="task types: lengths (by token shape) | mix")] = "lengths",
    mix: Annotated[Optional[str], typer.Option(help="type weights for --mapping mix, e.g. completion=1,generation=2")] = None,
    limit: Annotated[Optional[int], typer.Option(help="keep the first N requests")] = None,
) -> None:
    """Convert a public request trace to a trace of coding tasks (cato_sim.importers)."""
    from cato_core.trace import write_trace
    from cato_sim.importers import import_trace, parse_mix, summary

    df = import_trace(kind, file, seed=seed, time_scale=time_scale, mapping=mapping,
                      mix=parse_mix(mix) if mix is not None else None, limit=limit)
    write_trace(df, out)
    typer.echo(f"{summary(df)} -> {out}")


@profile_app.command("fit")
@input_errors
def profile_fit(
    csv: Annotated[Path, typer.Argument(help="Vidur mlp.csv (per-operator timings)")],
    out: Annotated[Path, typer.Option(help="profile YAML to write")],
    name: Annotated[Optional[str], typer.Option()] = None,
    arch: Annotated[str, typer.Option(help="model architecture")] = "codellama-7b",
    device: Annotated[str, typer.Option(help="device spec")] = "a100",
    tensor_parallel: Annotated[int, typer.Option()] = 1,
    cold_start_s: Annotated[float, typer.Option()] = 20.0,
) -> None:
    """Fit a device profile from operator timings (linear part) plus modelled attention."""
    from cato_core import profile_fit as pf

    if arch not in pf.MODELS:
        raise InputError("--arch", arch, f"one of {sorted(pf.MODELS)}")
    if device not in pf.DEVICES:
        raise InputError("--device", device, f"one of {sorted(pf.DEVICES)}")
    prof = pf.fit_vidur_profile(csv, name=name or out.stem, model=pf.MODELS[arch].name,
                                device=pf.DEVICES[device].name, tensor_parallel=tensor_parallel,
                                arch=pf.MODELS[arch], spec=pf.DEVICES[device],
                                cold_start_s=cold_start_s, cold_start_basis="given on the command line")
    typer.echo(pf.write_profile(prof, out))


@profile_app.command("build-shipped")
@input_errors
def profile_build_shipped(
    data_dir: Annotated[Path, typer.Option()] = Path(__file__).parents[1] / "data",
    out_dir: Annotated[Path, typer.Option()] = Path(__file__).parents[1] / "cato_core" / "profiles",
) -> None:
    """Regenerate the shipped profiles from the copied Vidur data."""
    from cato_core.profile_fit import build_shipped_profiles

    for p in build_shipped_profiles(data_dir, out_dir):
        typer.echo(p)


def main() -> None:
    app()
