"""Run an experiment: build its trace once, simulate each set-up on it, summarize, plot.

Output, per set-up (DIR itself for one set-up, DIR/<setup> for several):
tasks/nodes/replicas.parquet and summary.json (resolved config, seed, versions, wall time,
figures, and how well the router's predicted waits matched the waits: wait_prediction). DIR/trace.parquet is the trace every set-up saw; DIR/plots/*.png compare them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from cato_core.errors import InputError
from cato_core.profile import load_profile
from cato_core.provenance import versions
from cato_report.summary import summarize_files
from cato_report.wait_prediction import wait_prediction
from cato_sim.experiment import Experiment, Setup
from cato_sim.simulation import Simulation
from cato_traces.files import read_trace, write_trace

VERSIONED = ("cato", "simpy", "numpy", "pandas", "pyarrow", "pydantic")


def resolve_profiles(exp: Experiment, base_dir: Path) -> None:
    """Profile files are relative to the experiment; check them all before any work starts."""
    for spec in exp.models.values():
        path = Path(spec.profile)
        if path.suffix and not path.is_absolute() and (base_dir / path).is_file():
            spec.profile = str(base_dir / path)
        load_profile(spec.profile)


def build_trace(exp: Experiment, base_dir: Path, seed: int) -> pd.DataFrame:
    spec = exp.trace
    if spec.path is not None:
        path = Path(spec.path)
        df = read_trace(path if path.is_absolute() else base_dir / path, set(exp.task_types))
    else:
        from cato_traces.generate import generate_trace

        g = spec.generate
        df = generate_trace(
            rate=g.rate,
            duration_s=g.duration_s,
            num_tasks=g.num_tasks,
            mix=g.mix,
            seed=seed,
            lengths=g.lengths,
            arrivals=g.arrivals,
            cv=g.cv,
        )
    if spec.limit is not None:
        df = df.iloc[: spec.limit]
    if spec.time_scale != 1.0:
        df = df.assign(arrival_s=df["arrival_s"] * spec.time_scale)
    unknown = sorted(set(df["task_type"].unique()) - set(exp.task_types))
    if unknown:
        raise InputError(
            str(spec.path or "trace.generate"), "task_type", f"one of {sorted(exp.task_types)} (got {unknown[0]!r})"
        )
    return df.reset_index(drop=True)


def run_setup(
    exp: Experiment,
    setup: Setup,
    trace: pd.DataFrame,
    out: Path,
    seed: int,
    on_task_done: Callable[[], None] | None = None,
) -> dict:
    """Simulate one set-up; writes its tables and summary.json and returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sim = Simulation(exp, setup, trace, out, seed, on_task_done=on_task_done)
    end = sim.run()
    wall = time.perf_counter() - t0
    acc = {m: p.accelerators_per_replica for m, p in sim.profiles.items()}
    summary = {
        "experiment": exp.name,
        "setup": setup.name,
        "seed": seed,
        "versions": versions(VERSIONED),
        "wall_s": wall,
        "simulated_s": end,
        "config": {**exp.model_dump(mode="json", exclude={"setups"}), "setup": setup.model_dump(mode="json")},
        **summarize_files(out / "tasks.parquet", out / "replicas.parquet", acc),
        "wait_prediction": wait_prediction(out / "nodes.parquet"),  # how well W_k foresaw the waits
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_experiment(
    exp: Experiment, base_dir: Path, out: Path, seed: int | None = None, progress=None
) -> dict[str, dict]:
    """Run every set-up of ``exp`` on one trace; returns summaries by set-up name.

    ``progress``: a rich Progress to report on (None: silent).
    """
    seed = exp.seed if seed is None else seed
    resolve_profiles(exp, base_dir)
    trace = build_trace(exp, base_dir, seed)
    out.mkdir(parents=True, exist_ok=True)
    write_trace(trace, out / "trace.parquet")
    summaries: dict[str, dict] = {}
    for setup in exp.setups:
        where = out / setup.name if len(exp.setups) > 1 else out
        tick = None
        if progress is not None:
            bar = progress.add_task(f"{setup.name}", total=len(trace))
            step = max(1, len(trace) // 200)
            count = [0]

            def tick(bar=bar, step=step, count=count):
                count[0] += 1
                if count[0] % step == 0:
                    progress.update(bar, completed=count[0])

        summaries[setup.name] = run_setup(exp, setup, trace, where, seed, tick)
        if progress is not None:
            progress.update(bar, completed=len(trace))
    return summaries
