"""The simulator's fidelity on longer traces: `cato-live validate` across load and routers.

Real vLLM (CPU build, the tiny local model) replicas from a DEPLOY file (default
experiments/deploy/process_cpu.yaml), --replicas of them (default 1), each on a core of its
own from core 0. Calibrate, then validate: first `cato-live profile` measures the replica
(--profile FILE uses a given one instead), because this shared machine's speed drifts by
tens of percent between sessions and a profile measured hours earlier would fold that drift
into the simulator's error. By default one is measured before every validate
(DIR/<run>/profile.yaml, about a minute each; --no-profile-each: once, DIR/profile.yaml):
the speed also swings within a session, by up to 2x between consecutive minutes, so each
row's profile comes from the minute before its own live runs. Then the replicas' capacity
is measured live: a burst of --burst tasks of the four-type mix, all arriving at once,
replayed through the gateway; capacity = tasks / makespan. Then, for each router (cato, round_robin) and each
load (0.3, 0.6, 0.9 of that capacity): a Poisson mix of the four task types for --seconds,
validated (`cato-live validate --repeat-live`: simulated, replayed live twice); and the
Azure code trace (traces/azure_code.parquet, its first --azure-tasks tasks) time-scaled to
0.6 of capacity. The tiny model serves at most 2,048 tokens, so prompts are clipped to
--max-prompt and outputs to --max-output tokens in every trace (the same on both sides).

Prints one row per run: the simulator's relative error (sim / live - 1) of P50 and P95 TTFT
and E2E over all tasks, the Goodput error in points, the largest live-vs-live spread of
those figures, whether every row of fidelity.md met the goal (P50 within 10%, P95 within
15%, Goodput within 3 points) and whether the simulator's error stayed within twice the
live spread, the error of the LLM calls' time per output token (P50 / P95;
cato_report.call_tpot; no goal: the engine's decode apart from the queue), how fast the live
engine ran against the row's profile (cato_report.engine_speed: the median of measured /
profiled time over the calls that ran alone on their replica; far from x1.00 means the
machine's speed drifted between the profile and the replay), and the same errors of
validate's second simulation at that speed (sim_at_live_speed). Each run's folder
(DIR/<name>/) keeps fidelity.json, fidelity.md and plots; DIR/table.md is the table printed.

Cores: each vLLM replica has a core to itself (the whole server pinned, as a GPU replica has
its device); this process and its children (the gateway, the replayer, the simulator) run on
the cores left. On a 2-core machine that allows one replica, so both routers see the same
single replica there: the rows then differ by run-to-run noise only (a measure of it).
--replicas 2 shares the cores with the gateway and the load. Run nothing else meanwhile.

    make vllm && python bench/fidelity.py [--loads 0.3,0.6,0.9] [--routers cato,round_robin] [--seconds 60]

Uses CATO_VLLM_PYTHON and CATO_TINY_MODEL (default: the Makefile's .vllm-venv and
.cache/tiny-model).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from live_bench import ROOT, azure_trace, cato_live, deploy_file, gateway_process, measure_capacity, mix_trace

from cato_report.fidelity import goals_met

KEYS = ("ttft_p50", "ttft_p95", "e2e_p50", "e2e_p95")


def measure_profile(args, folder: Path) -> str:
    """`cato-live profile` of the DEPLOY's first model into folder/profile.yaml."""
    model = next(iter(yaml.safe_load(Path(args.deploy).read_text())["models"]))
    path = folder / "profile.yaml"
    cato_live("profile", deploy_file(args, folder, "cato", router="cato"), "--model", model, "--out", path)
    return str(path)


def validate(name: str, trace: pa.Table, router: str, args, out: Path) -> dict:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(trace, folder / "trace.parquet")
    profile = measure_profile(args, folder) if args.profile_each else args.profile
    extra = ["--profile", profile] if profile else []
    repeat = ["--repeat-live"] if args.repeat_live else []
    deploy = deploy_file(args, folder, router, router=router)
    command = ["validate", folder / "trace.parquet", "--deploy", deploy, "--out", folder / "out", *extra, *repeat]
    if args.gateway == "process":
        with gateway_process(deploy, args.gateway_port, folder / "gateway.log") as url:
            cato_live(*command, "--target", url)
    else:
        cato_live(*command)
    return json.loads((folder / "out/fidelity.json").read_text())


def row(name: str, router: str, rate: float, tasks: int, report: dict) -> str:
    o = report["overall"]
    errs = " | ".join(f"{o[k]['rel_err']:+.1%}" for k in KEYS)
    gp = o["goodput_rate"]
    spreads = [abs(o[k].get("live_spread", float("nan"))) for k in KEYS]
    spread = f"{max(spreads):.1%}" if "live_spread" in o[KEYS[0]] else "-"
    met = "/".join(map(str, goals_met(report)))
    v = report.get("verdict")
    within = f"{v['rows_within']}/{v['rows_checked']}" if v else "-"
    speed = report.get("engine_speed", {}).get("live", {})
    ratio = " / ".join("-" if speed.get(k) is None else f"x{speed[k]:.2f}" for k in ("ttft_ratio", "decode_ratio"))
    calls = report["calls"]["overall"]
    tpot = " / ".join(
        "-" if calls[k]["rel_err"] is None else f"{calls[k]['rel_err']:+.1%}" for k in ("tpot_p50", "tpot_p95")
    )
    at = report.get("at_live_speed")
    if at:
        a = at["overall"]
        at_speed = (
            " / ".join(f"{a[k]['rel_err']:+.1%}" for k in KEYS)
            + f"; {100 * a['goodput_rate']['abs_err']:+.1f} pt; {'/'.join(map(str, goals_met(at)))}"
        )
    else:
        at_speed = "-"
    return (
        f"| {name} | {router} | {rate:.2f} | {tasks} | {errs} | {100 * gp['abs_err']:+.1f} pt "
        f"| {gp['sim']:.1%} / {gp['live']:.1%} | {spread} | {met} | {within} | {tpot} "
        f"| {ratio} ({speed.get('lone_calls', 0)}) | {at_speed} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deploy", default=str(ROOT / "experiments/deploy/process_cpu.yaml"))
    ap.add_argument("--profile", help="a profile to use (default: measure one first, DIR/profile.yaml)")
    ap.add_argument(
        "--profile-each",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="without --profile: measure one before every validate (DIR/<run>/profile.yaml), not once at the start",
    )
    ap.add_argument("--loads", default="0.3,0.6,0.9", help="fractions of the measured capacity")
    ap.add_argument("--routers", default="cato,round_robin")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each Poisson trace")
    ap.add_argument("--azure-tasks", type=int, default=400, help="first tasks of the Azure code trace")
    ap.add_argument("--burst", type=int, default=200, help="tasks in the capacity burst")
    ap.add_argument("--max-prompt", type=int, default=1024)
    ap.add_argument("--max-output", type=int, default=256)
    ap.add_argument("--repeat-live", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--replicas", type=int, default=1, help="vLLM replicas, one core each from core 0")
    ap.add_argument(
        "--gateway",
        choices=["in-process", "process"],
        default="in-process",
        help="the live side's gateway: in validate's process (beside the replayer) or `cato-live serve` apart",
    )
    ap.add_argument("--gateway-port", type=int, default=8700)
    ap.add_argument("--out", default=str(ROOT / "results/fidelity"))
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    args.vllm_cores = cores[: args.replicas]
    rest = set(cores) - set(args.vllm_cores)
    if rest:  # the gateway, the replayer and the simulator (children of this process) off vLLM's cores
        os.sched_setaffinity(0, rest)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    args.profile_each = args.profile_each and args.profile is None
    if args.profile is None and not args.profile_each:
        args.profile = measure_profile(args, out)
    capacity = measure_capacity(args, out)
    print(f"capacity: {capacity:.2f} tasks/s ({args.burst}-task burst of the mix)", flush=True)
    lines = [
        f"capacity {capacity:.2f} tasks/s; profile {'measured before each run' if args.profile_each else args.profile}; "
        f"prompts <= {args.max_prompt}, outputs <= {args.max_output} tokens",
        "",
        "| trace | router | load | tasks | TTFT P50 | TTFT P95 | E2E P50 | E2E P95 | Goodput err "
        "| Goodput sim / live | max live spread | rows meeting goal | within 2x spread | calls' TPOT P50 / P95 "
        "| live speed vs profile, TTFT / decode (lone calls) | at live speed: the four errors; Goodput; rows meeting goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for router in args.routers.split(","):
        for load in (float(x) for x in args.loads.split(",")):
            trace = mix_trace(load * capacity, args.seconds, None, 7, args)
            report = validate(f"mix-{load:g}-{router}", trace, router, args, out)
            lines.append(row("Poisson mix", router, load, trace.num_rows, report))
            print(lines[-1], flush=True)
        trace = azure_trace(0.6 * capacity, args)
        report = validate(f"azure-{router}", trace, router, args, out)
        lines.append(row("Azure code", router, 0.6, trace.num_rows, report))
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"wall {time.monotonic() - t0:.0f} s")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
