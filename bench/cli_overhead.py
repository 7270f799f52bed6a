"""Whole-process time of `cato-sim run`, with plots and without, and where it goes.

The Azure code trace (8,819 requests) on 4 CodeLlama-7B A100 replicas, router cato
(experiments/azure_code_4.yaml). Each round runs, in turn: a bare `python -c pass`, an
import-only baseline (the modules `run --no-plots` loads), `cato-sim run --no-plots` and
`cato-sim run` (plots on); the variants alternate so slow spells of the machine hit them
alike. Prints median and min wall seconds of each and when the summary table reached
stdout, then the split of one in-process run (median over the rounds): imports, simulation
(summary.json's wall_s), the rest of the run (trace in and out, summaries), the printed
table, and the plots (matplotlib's import and the drawing), all in one process. Interpreter
start-up and exit are the whole-process figures minus that split. `cato-sim run` itself
imports matplotlib in a worker process on the other core while it simulates
(cato_report/plot_worker.py), so its plots cost the whole process less than the split's
import plus drawing; give it two cores. Figures, not asserts. Pin it for steady figures:

    taskset -c 0,1 python bench/cli_overhead.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "experiments/azure_code_4.yaml"
RUN_IMPORTS = "import cato_sim.cli, cato_sim.runner, cato_report.table, rich.console, rich.progress"

# One `run` in one process, timed by phase; prints the phases as JSON on its last line.
SPLIT = """
import time
t0 = time.perf_counter()
import io, json, sys
from pathlib import Path
{imports}
from cato_sim.cli import progress_bar
from cato_sim.experiment import load_experiment
from cato_sim.runner import run_experiment
from cato_report.table import summary_table
from rich.console import Console
t1 = time.perf_counter()
exp, base = load_experiment(sys.argv[1])
out = Path(sys.argv[2])
with progress_bar(Console(stderr=True, file=io.StringIO())) as progress:
    summaries = run_experiment(exp, base, out, progress=progress)
t2 = time.perf_counter()
Console(file=io.StringIO()).print(summary_table(summaries, title=exp.name))
t3 = time.perf_counter()
from cato_report.plots import plot_comparison
import matplotlib.figure
t4 = time.perf_counter()
runs = {{n: (out / n if len(summaries) > 1 else out) for n in summaries}}
plot_comparison(runs, summaries, out / "plots")
t5 = time.perf_counter()
sim = sum(s["wall_s"] for s in summaries.values())
print(json.dumps({{
    "imports": t1 - t0,
    "simulation": sim,
    "rest of the run": t2 - t1 - sim,
    "table": t3 - t2,
    "plots: import": t4 - t3,
    "plots: drawing": t5 - t4,
}}))
"""


def timed(argv: list[str]) -> tuple[float, float | None]:
    """Whole-process seconds, and seconds until the summary table was on stdout (None: no table)."""
    t0 = time.perf_counter()
    table = None
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True) as proc:
        for line in proc.stdout:
            if table is None and "Goodput rate" in line:
                table = time.perf_counter() - t0
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return time.perf_counter() - t0, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--experiment", default=str(EXPERIMENT))
    args = ap.parse_args()
    py = sys.executable
    script = Path(py).parent / "cato-sim"
    cato_sim = [str(script)] if script.is_file() else [py, "-m", "cato_sim"]
    with tempfile.TemporaryDirectory() as tmp:
        variants = {
            "python -c pass": [py, "-c", "pass"],
            "imports of run": [py, "-c", RUN_IMPORTS],
            "cato-sim run --no-plots": [*cato_sim, "run", args.experiment, "--out", f"{tmp}/off", "--no-plots"],
            "cato-sim run (plots)": [*cato_sim, "run", args.experiment, "--out", f"{tmp}/on"],
        }
        split_argv = [py, "-c", SPLIT.format(imports=RUN_IMPORTS), args.experiment, f"{tmp}/split"]
        times: dict[str, list[tuple[float, float | None]]] = {k: [] for k in variants}
        splits: list[dict[str, float]] = []
        for _ in range(args.rounds):
            for name, argv in variants.items():
                times[name].append(timed(argv))
            proc = subprocess.run(split_argv, check=True, capture_output=True, text=True, cwd=ROOT)
            splits.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"{Path(args.experiment).relative_to(ROOT) if Path(args.experiment).is_relative_to(ROOT) else args.experiment}"
    )
    print(f"whole process, {args.rounds} alternating rounds")
    print(f"{'':<26} {'median s':>9} {'min s':>7} {'table on screen, median s':>26}")
    for name, ts in times.items():
        wall = [t for t, _ in ts]
        table = [t for _, t in ts if t is not None]
        shown = f"{statistics.median(table):>26.3f}" if table else f"{'-':>26}"
        print(f"{name:<26} {statistics.median(wall):>9.3f} {min(wall):>7.3f} {shown}")
    print("split of one in-process run (median s)")
    for phase in splits[0]:
        print(f"  {phase:<24} {statistics.median(s[phase] for s in splits):>9.3f}")


if __name__ == "__main__":
    main()
