"""Simulator speed: simulated LLM requests per wall-second on the Azure code trace.

The 8,819 requests of traces/azure_code.parquet (57 min of a production code assistant)
replayed on 4 CodeLlama-7B replicas (A100 profile), once per router. Prints requests per
wall-second (best of --repeat runs, to damp noise from other load on the machine) and
engine events per request. Reference: Vidur does about 1,000 requests/s on this machine
on this trace.

    python bench/sim_throughput.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from cato_sim.experiment import parse_experiment
from cato_sim.simulation import Simulation
from cato_traces.files import read_trace

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--trace", default=str(ROOT / "traces/azure_code.parquet"))
    args = ap.parse_args()
    trace = read_trace(args.trace)
    print(f"trace: {args.trace}: {len(trace)} tasks over {trace['arrival_s'].max():.0f} s; 4 replicas")
    print(f"{'router':<12} {'requests/s':>11} {'wall s':>7} {'events/request':>15} {'goodput':>8}")
    for router in ("cato", "pow2", "round_robin"):
        exp = parse_experiment(
            {
                "trace": {"path": args.trace},
                "cluster": {"machines": 1, "accelerators_per_machine": 4},
                "models": {"codellama-7b": {"profile": "codellama-7b_a100", "replicas": 4}},
                "setups": [{"name": router, "router": router}],
            },
            "bench",
        )
        best = float("inf")
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as out:
                sim = Simulation(exp, exp.setups[0], trace, out, seed=0)
                t0 = time.perf_counter()
                sim.run()
                best = min(best, time.perf_counter() - t0)
                goodput = pd.read_parquet(Path(out) / "tasks.parquet")["met"].mean()
        llm_requests = len(trace)  # every task type here has one LLM node
        events = next(sim.env._eid)  # SimPy's counter of scheduled events
        print(f"{router:<12} {llm_requests / best:>11,.0f} {best:>7.2f} {events / llm_requests:>15.1f} {goodput:>8.1%}")


if __name__ == "__main__":
    main()
