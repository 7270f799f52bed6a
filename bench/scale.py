"""CATO at scale: a million tasks on 1,000 simulated replicas, per router, each in its own process.

The trace: traces/azure_code.parquet (8,819 tasks over its span of 3,435.9 s, sized for 4
CodeLlama-7B A100 replicas in experiments/azure_code.yaml) tiled: copies laid end to end,
copy c's arrivals shifted by c spans, cut at --tasks. End to end, the copies keep the
trace's arrival rate (one copy per span), so to give --replicas replicas the trace's load
per replica on 4 replicas, arrival times are divided by replicas / 4 (250 for 1,000
replicas): 2.57 tasks/s become 642 tasks/s, and a million tasks arrive over about 26 min of
simulated time. Bursts shrink with the rest: a 217 s idle gap becomes 0.87 s.

The cluster: --replicas CodeLlama-7B replicas (profile codellama-7b_a100, max_num_seqs 64 as
in experiments/azure_code.yaml) on machines of 8 accelerators, as many as they need.
Set-ups as in experiments/quickstart.yaml: cato, rayserve (router pow2) and round_robin,
each with the fixed scaler, so every router has the same replicas and the same load per
replica (autoscaling would make the replica count differ by router).

Each router runs in a child process of its own (peak RSS is per run: the child's VmHWM).
The child wraps its router's route() with time.perf_counter_ns (through make_router, so a
pool that keeps a bound method still calls the wrapper) and reports the median and p99 of
the routing time per decision, next to what the same wrapper measures around a no-op (its
floor) and the wall time it adds per call. Prints per router: wall seconds (the simulation
itself, and the whole child process), peak RSS, simulated LLM requests per wall-second,
routing microseconds per decision, Goodput.

Then the small case: the plain Azure code trace on 4 replicas, same set-ups, each as a
whole `cato-sim run` process (imports, tables and plots included): wall time and peak RSS.

    python bench/scale.py [--tasks 1000000] [--replicas 1000] [--routers cato,pow2,round_robin]
    python bench/scale.py --tasks 20000      # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRACE = ROOT / "traces/azure_code.parquet"
BASE_REPLICAS = 4  # the trace's own cluster (experiments/azure_code.yaml)
PROFILE = "codellama-7b_a100"
MAX_NUM_SEQS = 64  # as in experiments/azure_code.yaml
SETUP_NAMES = {"cato": "cato", "pow2": "rayserve", "round_robin": "round_robin"}  # quickstart.yaml's names
NOOP_CALLS = 200_000


# -- the trace -------------------------------------------------------------------------------
def tiled_trace(base: pd.DataFrame, tasks: int, compress: float) -> tuple[pd.DataFrame, int, float]:
    """``tasks`` rows of ``base`` tiled end to end (copy c shifted by c spans), arrivals / compress.

    Returns the trace, the number of copies begun and the span (the base's last arrival)."""
    base = base.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    n = len(base)
    span = float(base["arrival_s"].max() - base["arrival_s"].min())
    copies = math.ceil(tasks / n)
    idx = np.arange(tasks)
    row, copy = idx % n, idx // n
    arrival = (base["arrival_s"].to_numpy()[row] - base["arrival_s"].iloc[0] + copy * span) / compress
    ids = pd.Series(copy).map("c{:04d}-".format).str.cat(base["task_id"].to_numpy()[row])
    df = pd.DataFrame(
        {
            "task_id": ids.to_numpy(),
            "arrival_s": arrival,
            "task_type": base["task_type"].to_numpy()[row],
            "prompt_tokens": base["prompt_tokens"].to_numpy()[row],
            "output_tokens": base["output_tokens"].to_numpy()[row],
        }
    )
    return df, copies, span


def experiment_tree(router: str, replicas: int, trace_path: str) -> dict:
    return {
        "name": "scale",
        "seed": 1,
        "trace": {"path": trace_path},
        "cluster": {"machines": math.ceil(replicas / 8), "accelerators_per_machine": 8},
        "models": {"codellama-7b": {"profile": PROFILE, "replicas": replicas, "max_num_seqs": MAX_NUM_SEQS}},
        "setups": [{"name": SETUP_NAMES.get(router, router), "router": router, "scaler": "fixed"}],
    }


# -- timing route() --------------------------------------------------------------------------
def timed(fn, out: array):
    """``fn`` with each call's duration in ns appended to ``out``."""
    clock, add = time.perf_counter_ns, out.append

    def route(r, replicas, now):
        t0 = clock()
        choice = fn(r, replicas, now)
        add(clock() - t0)
        return choice

    return route


def noop(r, replicas, now):
    return None


def wrapper_overhead() -> dict:
    """What the wrapper measures around a no-op (its floor), and the wall time it adds per call."""
    floor = array("q")
    wrapped = timed(noop, floor)
    best_plain = best_wrapped = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for _ in range(NOOP_CALLS):
            noop(None, None, 0.0)
        best_plain = min(best_plain, time.perf_counter_ns() - t0)
        del floor[:]
        t0 = time.perf_counter_ns()
        for _ in range(NOOP_CALLS):
            wrapped(None, None, 0.0)
        best_wrapped = min(best_wrapped, time.perf_counter_ns() - t0)
    a = np.frombuffer(floor, dtype=np.int64)
    return {
        "floor_p50_us": float(np.percentile(a, 50)) / 1e3,
        "floor_p99_us": float(np.percentile(a, 99)) / 1e3,
        "added_us_per_call": (best_wrapped - best_plain) / NOOP_CALLS / 1e3,
    }


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one router, in the child ----------------------------------------------------------------
def child(router: str, tasks: int, replicas: int, trace_path: str) -> None:
    t_start = time.perf_counter()
    import cato_sim.simulation as simulation
    from cato_sim.experiment import parse_experiment
    from cato_traces.files import read_trace

    overhead = wrapper_overhead()
    base = read_trace(trace_path)
    trace, _, _ = tiled_trace(base, tasks, replicas / BASE_REPLICAS)
    del base
    exp = parse_experiment(experiment_tree(router, replicas, trace_path), "bench/scale.py")
    llm_nodes = {name: sum(n.kind == "llm" for n in t.nodes) for name, t in exp.task_types.items()}
    requests = int(trace["task_type"].map(llm_nodes).sum())

    durations = array("q")
    make_router = simulation.make_router
    routers = []

    def make_timed_router(*a, **k):
        r = make_router(*a, **k)
        route = timed(r.route, durations)
        try:
            r.route = route  # the instance's attribute shadows the class's method
        except AttributeError:  # a router with __slots__: a subclass of its own with the wrapper
            cls = type(r)
            r.__class__ = type(cls.__name__, (cls,), {"__slots__": (), "route": lambda self, *x: route(*x)})
        routers.append(r)
        return r

    simulation.make_router = make_timed_router
    with tempfile.TemporaryDirectory(prefix="cato-scale-") as out:
        t0 = time.perf_counter()
        sim = simulation.Simulation(exp, exp.setups[0], trace, out, seed=exp.seed)
        t_built = time.perf_counter()
        end = sim.run()
        t_run = time.perf_counter()
        peak = vm_hwm_mb()
        tasks_table = pd.read_parquet(Path(out) / "tasks.parquet", columns=["met", "status"])
        goodput = float(tasks_table["met"].mean())
        statuses = tasks_table["status"].value_counts().to_dict()
    d = np.frombuffer(durations, dtype=np.int64)
    result = {
        "router": router,
        "tasks": len(trace),
        "llm_requests": requests,
        "replicas": replicas,
        "routers_made": len(routers),
        "decisions": len(d),
        "route_p50_us": float(np.percentile(d, 50)) / 1e3 if len(d) else float("nan"),
        "route_p99_us": float(np.percentile(d, 99)) / 1e3 if len(d) else float("nan"),
        "route_total_s": float(d.sum()) / 1e9,
        "build_s": t_built - t0,
        "sim_s": t_run - t0,
        "process_s": time.perf_counter() - t_start,
        "simulated_s": end,
        "peak_rss_mb": peak,
        "goodput": goodput,
        "statuses": {str(k): int(v) for k, v in statuses.items()},
        **overhead,
    }
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent ------------------------------------------------------------------------------
def run_child(cmd: list[str], **kw) -> tuple[int, float, float, str]:
    """Run ``cmd``; its exit code, wall seconds, peak RSS in MB (its own rusage) and stdout."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, **kw)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return proc.returncode, wall, usage.ru_maxrss / 1024, out.read()


def big_case(args, routers: list[str]) -> None:
    base = pd.read_parquet(args.trace)
    compress = args.replicas / BASE_REPLICAS
    trace, copies, span = tiled_trace(base, args.tasks, compress)
    rate = len(base) / span
    print(
        f"big case: {args.trace} ({len(base):,} tasks, span {span:,.1f} s, {rate:.2f} tasks/s on "
        f"{BASE_REPLICAS} replicas = {rate / BASE_REPLICAS:.3f} tasks/s per replica)"
    )
    print(
        f"  tiled: {copies} copies end to end (1 copy per span, so the rate stays {rate:.2f} tasks/s), "
        f"cut at {args.tasks:,} tasks; compressed by {args.replicas} / {BASE_REPLICAS} / 1 = {compress:g} "
        f"-> {rate * compress:,.0f} tasks/s = {rate * compress / args.replicas:.3f} per replica, "
        f"last arrival at {trace['arrival_s'].iloc[-1]:,.0f} s simulated"
    )
    print(
        f"  {args.replicas:,} replicas {PROFILE}, max_num_seqs {MAX_NUM_SEQS}, "
        f"{math.ceil(args.replicas / 8)} machines x 8; scaler fixed for every router (as in quickstart.yaml)"
    )
    del base, trace
    head = (
        f"{'setup':<12} {'router':<12} {'sim s':>8} {'proc s':>8} {'peak MB':>8} {'req/wall-s':>11} "
        f"{'route p50 us':>13} {'route p99 us':>13} {'route share':>12} {'goodput':>8}"
    )
    print(head)
    results = []
    for router in routers:
        cmd = [sys.executable, __file__, "--child", router, "--tasks", str(args.tasks)]
        cmd += ["--replicas", str(args.replicas), "--trace", str(args.trace)]
        code, wall, rss, out = run_child(cmd, cwd=ROOT)
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        if code != 0 or line is None:
            print(f"{SETUP_NAMES.get(router, router):<12} {router:<12} failed (exit {code}) after {wall:.1f} s")
            continue
        r = json.loads(line[len("RESULT ") :])
        r["wait4_rss_mb"] = rss
        results.append(r)
        print(
            f"{SETUP_NAMES.get(router, router):<12} {router:<12} {r['sim_s']:>8.1f} {r['process_s']:>8.1f} "
            f"{r['peak_rss_mb']:>8.0f} {r['llm_requests'] / r['sim_s']:>11,.0f} {r['route_p50_us']:>13.1f} "
            f"{r['route_p99_us']:>13.1f} {r['route_total_s'] / r['sim_s']:>12.1%} {r['goodput']:>8.1%}",
            flush=True,
        )
    for r in results:
        extra = ""
        if r["decisions"] == 0:
            extra = "  WARNING: route() was never called through the wrapper (routing times are missing)"
        print(
            f"  {r['router']}: {r['tasks']:,} tasks, {r['llm_requests']:,} LLM requests, {r['decisions']:,} "
            f"route() calls; built in {r['build_s']:.1f} s; simulated {r['simulated_s']:,.0f} s; "
            f"statuses {r['statuses']}; peak RSS by wait4 {r['wait4_rss_mb']:.0f} MB{extra}"
        )
    if results:
        r = results[0]
        print(
            f"  timing wrapper around a no-op: p50 {r['floor_p50_us']:.3f} us, p99 {r['floor_p99_us']:.3f} us "
            f"(the floor of every routing figure); wall added per call {r['added_us_per_call']:.3f} us"
        )
        base_r = next((x for x in results if x["router"] == "round_robin"), None)
        if base_r is not None:
            for r in results:
                if r is not base_r:
                    print(
                        f"  {r['router']} / round_robin in this run: sim wall {r['sim_s'] / base_r['sim_s']:.2f}x, "
                        f"route p50 {r['route_p50_us'] / base_r['route_p50_us']:.1f}x, "
                        f"peak RSS {r['peak_rss_mb'] / base_r['peak_rss_mb']:.2f}x"
                    )


def small_case(args, routers: list[str]) -> None:
    base = pd.read_parquet(args.trace)
    print(
        f"small case: {args.trace} as is ({len(base):,} tasks) on {BASE_REPLICAS} replicas, each set-up a whole "
        f"`cato-sim run` process"
    )
    sim_cmd = Path(sys.executable).parent / "cato-sim"
    prefix = [str(sim_cmd)] if sim_cmd.is_file() else [sys.executable, "-m", "cato_sim"]
    print(f"{'setup':<12} {'router':<12} {'proc s':>7} {'sim s':>7} {'peak MB':>8} {'req/wall-s':>11} {'goodput':>8}")
    with tempfile.TemporaryDirectory(prefix="cato-scale-small-") as tmp:
        for router in routers:
            exp = experiment_tree(router, BASE_REPLICAS, str(Path(args.trace).resolve()))
            path = Path(tmp) / f"{router}.yaml"
            path.write_text(yaml.safe_dump(exp, sort_keys=False))
            out = Path(tmp) / router
            code, wall, rss, _ = run_child(
                [*prefix, "run", str(path), "--out", str(out)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},  # this tree's cato, as in the big case
                stderr=subprocess.DEVNULL,
            )
            name = SETUP_NAMES.get(router, router)
            if code != 0:
                print(f"{name:<12} {router:<12} failed (exit {code}) after {wall:.1f} s")
                continue
            summary = json.loads((out / "summary.json").read_text())
            goodput = pd.read_parquet(out / "tasks.parquet", columns=["met"])["met"].mean()
            print(
                f"{name:<12} {router:<12} {wall:>7.2f} {summary['wall_s']:>7.2f} {rss:>8.0f} "
                f"{len(base) / wall:>11,.0f} {goodput:>8.1%}"
            )
    print("  (req/wall-s here: whole process, start-up, tables and plots included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=1000)
    ap.add_argument("--routers", default="cato,pow2,round_robin")
    ap.add_argument("--trace", default=str(TRACE))
    ap.add_argument("--skip-small", action="store_true", help="only the big case")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tasks, args.replicas, args.trace)
        return
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    big_case(args, routers)
    if not args.skip_small:
        print()
        small_case(args, routers)


if __name__ == "__main__":
    main()
