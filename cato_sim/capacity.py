"""Measured capacity: the task rate an experiment's replicas sustain, measured by the simulator.

Definition (used by `cato-sim explore` to put load on a common scale): the experiment's
replicas at start, fixed (round robin, no scaling), get a burst of N tasks of its mix, all
arriving at time 0, with N = max(200, 20 x the engines' sequence slots) so every engine stays
full for most of the burst. The capacity is k / t_k, k = ceil(0.9 N), t_k the time the k-th
task completes: the completion rate while the engines are saturated. The last 10% are left
out because the engines drain them with ever smaller batches. With several models it is the
rate the mix can be fed at, set by the model that finishes its share last. Token lengths come
from the experiment's generator (``trace.generate``) with the given seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cato_core.errors import InputError
from cato_sim.experiment import Experiment, Setup

MIN_TASKS = 200
TASKS_PER_SLOT = 20
SATURATED_SHARE = 0.9


def burst_tasks(exp: Experiment) -> int:
    slots = sum(m.replicas * m.max_num_seqs for m in exp.models.values())
    if slots == 0:
        raise InputError(exp.name, "models", "at least one replica at start to measure capacity")
    return max(MIN_TASKS, TASKS_PER_SLOT * slots)


def measure_capacity(exp: Experiment, base_dir: Path, out: Path, seed: int) -> dict:
    """Tasks/s of ``exp``'s starting replicas under a burst (module docstring); writes the
    burst's run tables to ``out``. Returns capacity, tasks, k and t_k."""
    from cato_sim.runner import resolve_profiles, run_setup
    from cato_traces.generate import generate_trace

    if exp.trace.generate is None:
        raise InputError(exp.name, "trace", "a 'generate' trace (the mix and lengths capacity is measured on)")
    # no horizon: a slow device may take long to clear the burst, and every task must finish
    exp = exp.model_copy(deep=True, update={"drain_s": 1e9})
    resolve_profiles(exp, base_dir)
    n = burst_tasks(exp)
    g = exp.trace.generate
    trace = generate_trace(rate=1.0, num_tasks=n, mix=g.mix, seed=seed, lengths=g.lengths).assign(arrival_s=0.0)
    run_setup(exp, Setup(name="capacity", router="round_robin", scaler="fixed"), trace, Path(out), seed)
    tasks = pd.read_parquet(Path(out) / "tasks.parquet", columns=["arrival_s", "e2e_s", "status"])
    done = np.sort((tasks["arrival_s"] + tasks["e2e_s"])[tasks["status"] == "ok"].to_numpy(dtype=float))
    k = math.ceil(SATURATED_SHARE * n)
    if done.size < k or done[k - 1] <= 0:
        raise InputError(exp.name, "models", f"replicas that complete a burst of {n} tasks (got {done.size})")
    return {"capacity": k / float(done[k - 1]), "tasks": n, "k": k, "t_k": float(done[k - 1])}
