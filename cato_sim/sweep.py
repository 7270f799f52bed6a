"""Sweeps: every (policy, arrival rate, seed) of an experiment, in worker processes or on Ray.

Policies. A policy name is a set-up of the experiment (``setups[].name``); a name the
experiment has no set-up for may be one of the built-ins in ``BUILTIN_POLICIES``:
the presets of cato_core.presets: ``cato`` (router cato, scaler cato), ``round_robin``
(router round_robin, scaler fixed) and the Ray Serve baselines ``rayserve`` (generic
defaults, untuned), ``rayserve_llm`` and ``rayserve_vllm_example`` (router pow2, scaler
rayserve, with the parameters each deployment gets).

Rates. With a ``trace.generate`` experiment the sweep sets ``trace.generate.rate``. With a
``trace.path`` experiment it time-scales the file instead: ``trace.time_scale`` becomes
(the file's mean rate) / (target rate), the mean rate being (n - 1) / (last arrival - first
arrival) after ``trace.limit``; the file's own ``time_scale`` is replaced.

Seeds. Seed index ``i`` (0..N-1) runs with ``run_seed(experiment seed, i)``, used for the
generated trace and the simulation alike; the trace of (rate, seed) is the same for every
policy, so policies are compared on identical traces. A ``path`` trace is the same for
every seed; the seed then only reaches the policies (e.g. pow2's random choices).

Results do not depend on the number of workers nor on Ray vs local: each run is a pure
function of its job and writes its own folder; the tables are built from those folders.

DIR/
  sweep.json                          the plan: experiment, policies, rates, seeds, task types
  runs/<policy>/rate=<r>/seed=<i>/    tasks/nodes/replicas.parquet and summary.json
                                      (runner.run_setup), or failure.json when it failed
  sweep.parquet                       one row per successful run and task type (``COLUMNS``)
  failures.json                       the failed runs (an empty list when none failed)
  plots/*.png                         cato_report.sweep_plots

``collect(DIR)`` rebuilds sweep.parquet and failures.json from DIR alone.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cato_core.errors import InputError
from cato_core.presets import presets
from cato_report.summary import PERCENTILES
from cato_sim.experiment import Experiment, Setup

BUILTIN_POLICIES: dict[str, dict] = {
    n: {"name": n, "preset": n, "router": p["router"], "scaler": p["scaler"]} for n, p in presets().items()
}

LATENCY = [f"{m}_p{q}" for m in ("ttft", "e2e") for q in PERCENTILES]
KEYS = ["policy", "rate", "seed", "task_type"]  # one row per run and task type; sorted by these
ID_COLUMNS = ["policy", "rate", "seed", "run_seed", "task_type", "router", "scaler"]
TYPE_COLUMNS = ["tasks", "goodput_rate", *LATENCY]  # figures of the row's task type
RUN_COLUMNS = [
    "all_tasks",
    "all_goodput_rate",
    "all_goodput_per_s",
    *[f"all_{c}" for c in LATENCY],
    "utilization",
    "replica_seconds",
    "accelerator_seconds",
    "simulated_s",
]  # of the whole run
WALL_COLUMNS = ["wall_s"]  # the only columns that depend on the machine
COLUMNS = [*ID_COLUMNS, *TYPE_COLUMNS, *RUN_COLUMNS, *WALL_COLUMNS, "run_dir"]


def run_seed(experiment_seed: int, index: int) -> int:
    """The seed of run ``index``: the two mixed by numpy's SeedSequence (deterministic)."""
    return int(np.random.SeedSequence([experiment_seed % 2**63, index]).generate_state(1)[0])


def rate_label(rate: float) -> str:
    return f"{rate:g}"


def run_dir(policy: str, rate: float, seed: int) -> str:
    """A run's folder, relative to the sweep folder."""
    return f"runs/{policy}/rate={rate_label(rate)}/seed={seed}"


def parse_list(raw: str, what: str) -> list[str]:
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if not items:
        raise InputError(what, raw or "(empty)", "a comma-separated list")
    return items


def parse_rates(raw: str) -> list[float]:
    rates = []
    for item in parse_list(raw, "--rates"):
        try:
            r = float(item)
        except ValueError:
            raise InputError("--rates", item, "numbers of tasks per second, e.g. 0.67,1.33,2") from None
        if not (r > 0 and math.isfinite(r)):
            raise InputError("--rates", item, "a positive rate")
        rates.append(r)
    return rates


def resolve_policies(exp: Experiment, names: list[str]) -> list[Setup]:
    """Set-ups for the policy names: the experiment's own first, else the built-ins."""
    own = {s.name: s for s in exp.setups}
    setups = []
    for n in names:
        if n in own:
            setups.append(own[n])
        elif n in BUILTIN_POLICIES:
            setups.append(Setup.model_validate(BUILTIN_POLICIES[n]))
        else:
            raise InputError(
                "--policies", n, f"a set-up of the experiment {sorted(own)} or a built-in {sorted(BUILTIN_POLICIES)}"
            )
    if len(set(names)) != len(names):
        raise InputError("--policies", ",".join(names), "distinct names")
    return setups


def _mean_rate(trace: pd.DataFrame) -> float:
    t = trace["arrival_s"]
    span = float(t.max() - t.min())
    if len(t) < 2 or span <= 0:
        raise InputError("trace.path", "arrival_s", "at least two distinct arrival times to time-scale to a rate")
    return (len(t) - 1) / span


def plan_sweep(exp: Experiment, base_dir: Path, policies: list[str], rates: list[float], seeds: int) -> dict:
    """The sweep's plan (saved as sweep.json); validates every input before anything runs."""
    from cato_sim.runner import build_trace

    if seeds < 1:
        raise InputError("--seeds", str(seeds), "at least 1")
    labels = [rate_label(r) for r in rates]
    if len(set(labels)) != len(labels):
        raise InputError("--rates", ",".join(labels), "distinct rates")
    setups = resolve_policies(exp, policies)
    base_dir = Path(base_dir).resolve()
    tree = exp.model_dump(mode="json")
    for spec in tree["models"].values():  # runs may start elsewhere (Ray): fix file paths now
        if Path(spec["profile"]).suffix:
            spec["profile"] = str(Path(spec["profile"]).resolve())
    if exp.trace.path is not None:
        tree["trace"]["path"] = str((base_dir / exp.trace.path).resolve())
        raw = build_trace(
            exp.model_copy(update={"trace": exp.trace.model_copy(update={"time_scale": 1.0})}), base_dir, exp.seed
        )
        base_rate = _mean_rate(raw)
        task_types = sorted(set(raw["task_type"]))
        mode = "time_scale"
    else:
        base_rate = None
        mix = exp.trace.generate.mix
        task_types = sorted(t for t, w in mix.items() if w > 0)
        mode = "generate"
    return {
        "experiment": exp.name,
        "experiment_config": tree,
        "base_dir": str(base_dir),
        "policies": [s.model_dump(mode="json") for s in setups],
        "rates": list(rates),
        "seeds": seeds,
        "run_seeds": [run_seed(exp.seed, i) for i in range(seeds)],
        "task_types": task_types,
        "rate_mode": mode,
        "trace_mean_rate": base_rate,
    }


def jobs_of(plan: dict, out: Path) -> list[dict]:
    """One job per run, in plan order (policy, rate, seed); plain data, so any process can run it."""
    jobs = []
    for setup in plan["policies"]:
        for rate in plan["rates"]:
            tree = json.loads(json.dumps(plan["experiment_config"]))
            if plan["rate_mode"] == "generate":
                tree["trace"]["generate"]["rate"] = rate
            else:
                tree["trace"]["time_scale"] = plan["trace_mean_rate"] / rate
            for i, seed in enumerate(plan["run_seeds"]):
                jobs.append(
                    make_job(plan, tree, setup, rate, i, seed, Path(out).resolve() / run_dir(setup["name"], rate, i))
                )
    return jobs


def make_job(plan: dict, tree: dict, setup: dict, rate: float, i: int, seed: int, out: Path, **extra) -> dict:
    """One run as plain data for run_job: the experiment tree, the set-up, seed number i of
    the plan and its run seed, where it writes; ``extra`` keys label it (explore's point)."""
    return {
        "experiment": tree,
        "base_dir": plan["base_dir"],
        "setup": setup,
        "policy": setup["name"],
        "rate": rate,
        "seed": i,
        "run_seed": seed,
        **extra,
        "out": str(out),
    }


def run_job(job: dict) -> dict:
    """Run one (policy, rate, seed): top level and plain data in and out (process pools, Ray).

    Never raises: a failure is written to the run's failure.json and returned as a record.
    """
    from cato_sim.runner import build_trace, run_setup

    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("summary.json", "failure.json"):
        (out / stale).unlink(missing_ok=True)
    record = {k: job[k] for k in ("policy", "rate", "seed", "run_seed")}
    t0 = time.perf_counter()
    try:
        exp = Experiment.model_validate(job["experiment"])
        setup = Setup.model_validate(job["setup"])
        trace = build_trace(exp, Path(job["base_dir"]), job["run_seed"])
        summary = run_setup(exp, setup, trace, out, job["run_seed"])
        return {**record, "ok": True, "goodput_rate": summary["goodput_rate"], "wall_s": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001  (a failed run must not stop the sweep)
        failure = {**record, "ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        (out / "failure.json").write_text(json.dumps(failure, indent=2) + "\n")
        return {**failure, "wall_s": time.perf_counter() - t0}


def _local(jobs: list[dict], workers: int) -> Iterator[dict]:
    if workers == 1:
        for job in jobs:
            yield run_job(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: no fork of a process with threads (progress bar); the same start on every OS
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for f in as_completed(futures):
            try:
                yield f.result()
            except Exception as e:  # noqa: BLE001  (the worker process died)
                yield _lost(futures[f], e)


def _lost(job: dict, e: BaseException) -> dict:
    """A run whose worker died before it could report: recorded like any failure."""
    failure = {
        **{k: job[k] for k in ("policy", "rate", "seed", "run_seed")},
        "ok": False,
        "error": f"worker lost: {type(e).__name__}: {e}",
        "traceback": "",
    }
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "failure.json").write_text(json.dumps(failure, indent=2) + "\n")
    return {**failure, "wall_s": None}


def _reachable(address: str) -> None:
    """Fail fast on a HOST:PORT (or ray://HOST:PORT) nobody listens on: Ray itself waits minutes."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if address in ("local", "auto") or not sep or not port.isdigit():
        return
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise InputError(
            "--ray-address", address, f"a reachable Ray cluster or 'local' ({e.__class__.__name__})"
        ) from None


def _ray(jobs: list[dict], address: str, workers: int | None) -> Iterator[dict]:
    """Each run a Ray task. ``address="local"`` starts a local Ray instance for the sweep.

    Connects at once (bad input fails before anything runs); the results come as they finish.
    """
    try:
        import ray
    except ImportError:
        raise InputError("--ray-address", address, "the ray extra installed (pip install 'cato[ray]')") from None
    started = not ray.is_initialized()
    if started:
        _reachable(address)
        root = str(Path(__file__).resolve().parents[1])  # lets local workers import cato_* uninstalled
        try:
            if address == "local":
                path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")]))
                ray.init(
                    num_cpus=workers or os.cpu_count() or 1,
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": path}},
                )
            else:
                ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(
                "--ray-address", address, f"a reachable Ray cluster or 'local' ({type(e).__name__})"
            ) from None
    return _ray_results(ray, jobs, started)


def _ray_results(ray, jobs: list[dict], started: bool) -> Iterator[dict]:
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_job)
        pending = {task.remote(job): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as e:  # noqa: BLE001  (worker or node lost)
                    yield _lost(job, e)
    finally:
        if started:
            ray.shutdown()


def execute(jobs: list[dict], workers: int | None = None, ray_address: str | None = None) -> Iterator[dict]:
    """``run_job`` on every job, in worker processes (default: one per CPU) or as Ray tasks;
    the records as they finish. Ray connects at once: a bad address fails before any run."""
    if workers is not None and workers < 1:
        raise InputError("--workers", str(workers), "at least 1")
    if ray_address:
        return _ray(jobs, ray_address, workers)
    return _local(jobs, max(1, min(workers or os.cpu_count() or 1, len(jobs))))


@dataclass
class SweepResult:
    frame: pd.DataFrame  # sweep.parquet
    failures: list[dict] = field(default_factory=list)  # failures.json
    out: Path = Path(".")


def run_sweep(
    exp: Experiment,
    base_dir: Path,
    out: Path,
    policies: list[str],
    rates: list[float],
    seeds: int,
    workers: int | None = None,
    ray_address: str | None = None,
    progress=None,
) -> SweepResult:
    """Run every (policy, rate, seed) and collect; ``progress``: a rich Progress (None: silent)."""
    plan = plan_sweep(exp, base_dir, policies, rates, seeds)
    out = Path(out)
    jobs = jobs_of(plan, out)
    records = execute(jobs, workers, ray_address)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(plan, indent=2) + "\n")
    follow(records, progress, f"{exp.name}: runs", len(jobs))
    return collect(out)


def follow(records: Iterator[dict], progress, title: str, total: int) -> None:
    """Wait for every run of ``records`` (execute's), a bar on ``progress`` (a rich Progress;
    None: silent) advancing as they finish, with a line for each that failed."""
    bar = progress.add_task(title, total=total) if progress is not None else None
    for rec in records:
        if progress is not None:
            progress.advance(bar)
            if not rec["ok"]:
                progress.console.print(
                    f"[red]failed[/red] {rec['policy']} rate={rate_label(rec['rate'])} seed={rec['seed']}: {rec['error']}"
                )


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _rows(summary: dict, job: dict, task_types: list[str], rel: str) -> list[dict]:
    setup = summary["config"]["setup"]
    run = {f"all_{c}": _num(summary.get(c)) for c in ["goodput_rate", "goodput_per_s", *LATENCY]}
    run.update(
        all_tasks=int(summary["tasks"]),
        utilization=_num(summary.get("utilization")),
        replica_seconds=_num(summary.get("replica_seconds")),
        accelerator_seconds=_num(summary.get("accelerator_seconds")),
        simulated_s=_num(summary.get("simulated_s")),
        wall_s=_num(summary.get("wall_s")),
    )
    rows = []
    for t in task_types:
        figs = summary["by_task_type"].get(t, {})
        rows.append(
            {
                "policy": job["policy"],
                "rate": float(job["rate"]),
                "seed": int(job["seed"]),
                "run_seed": int(job["run_seed"]),
                "task_type": t,
                "router": setup["router"],
                "scaler": setup["scaler"],
                "tasks": int(figs.get("tasks", 0)),
                **{c: _num(figs.get(c)) for c in ["goodput_rate", *LATENCY]},
                **run,
                "run_dir": rel,
            }
        )
    return rows


def collect(out: Path) -> SweepResult:
    """Build DIR/sweep.parquet and DIR/failures.json from DIR/sweep.json and the run folders."""
    out = Path(out)
    plan_path = out / "sweep.json"
    if not plan_path.is_file():
        raise InputError(str(out), "sweep.json", "a sweep folder written by `cato-sim sweep`")
    plan = json.loads(plan_path.read_text())
    rows, failures = [], []
    for job in jobs_of(plan, out):
        rel = run_dir(job["policy"], job["rate"], job["seed"])
        folder = out / rel
        if (folder / "summary.json").is_file():
            rows += _rows(json.loads((folder / "summary.json").read_text()), job, plan["task_types"], rel)
            continue
        record = {k: job[k] for k in ("policy", "rate", "seed", "run_seed")}
        if (folder / "failure.json").is_file():
            error = json.loads((folder / "failure.json").read_text())["error"]
        else:
            error = "no result (not run or interrupted)"
        failures.append({**record, "run_dir": rel, "error": error})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {s["name"]: i for i, s in enumerate(plan["policies"])}
    frame = frame.sort_values(KEYS, key=lambda c: c.map(order) if c.name == "policy" else c, kind="stable")
    frame = frame.reset_index(drop=True).astype(
        {"rate": float, "seed": int, "run_seed": "int64", "tasks": int, "all_tasks": int}
    )
    frame.to_parquet(out / "sweep.parquet", index=False)
    (out / "failures.json").write_text(json.dumps(failures, indent=2) + "\n")
    return SweepResult(frame, failures, out)


def load_sweep(out: Path) -> pd.DataFrame:
    """DIR/sweep.parquet (rebuilt from the run folders when missing)."""
    path = Path(out) / "sweep.parquet"
    return pd.read_parquet(path) if path.is_file() else collect(out).frame
