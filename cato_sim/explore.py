"""`cato-sim explore`: where CATO wins, mapped over load, SLA, burstiness and device speed.

Axes (each a list of values and a base value):
  load      arrival rate as a fraction of the measured capacity (cato_sim.capacity) at the
            point's device speed: rate = load x capacity(slowdown)
  sla       every task type's SLA, as a multiple of its isolated baseline (cato_core.tasks)
  cv        the coefficient of variation of the inter-arrival gaps: 1 is Poisson (the
            generator's default draws), above 1 gamma gaps with that CV (bursts)
  slowdown  every duration of every profile times this (cato_core.profile_speed.slowed)

The map is not the full product: for every pair of axes, the two vary over their values and
the other two stay at their base (a point shared by two pairs is run once). Every point runs
every policy on the same traces: ``tasks`` arrivals per trace (so each point weighs the same),
seed index i drawing with ``sweep.run_seed(experiment seed, i)`` at every point and policy.
Runs are the sweep's jobs (cato_sim.sweep.run_job) in worker processes or on Ray, each a pure
function of its job; the tables are built from the run folders alone.

DIR/
  explore.json                      the plan: grid, points (with rate and capacity), policies
  capacity.json, capacity/<k>/      measured capacity per slowdown, and the burst runs behind it
  profiles/<model>@x<k>.yaml        the slowed profiles the runs read
  runs/<point>/<policy>/seed=<i>/   run tables and summary.json (or failure.json)
  explore.parquet                   one row per point x policy x seed (``COLUMNS``)
  failures.json, gain.md, plots/    failed runs; the gain table; heatmaps (cato_report)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import pandas as pd

from cato_core.errors import InputError
from cato_core.profile import load_profile, save_profile
from cato_core.profile_speed import slowed
from cato_report.summary import PERCENTILES
from cato_sim.experiment import Experiment
from cato_sim.sweep import execute, follow, make_job, resolve_policies, run_seed

AXES = ("load", "sla", "cv", "slowdown")
DEFAULT_VALUES = {
    "load": (0.3, 0.6, 0.9, 1.1),
    "sla": (1.2, 2.0, 3.0, 5.0),
    "cv": (1.0, 2.0, 8.0),
    "slowdown": (1.0, 2.0, 4.0),
}
DEFAULT_BASE = {"load": 0.9, "sla": 3.0, "cv": 1.0, "slowdown": 1.0}
# CATO and every preset baseline (cato_core.presets): the strongest of them is the comparison
DEFAULT_POLICIES = ("cato", "round_robin", "rayserve", "rayserve_llm", "rayserve_vllm_example")
DEFAULT_TASKS = 200
LATENCY = [f"{m}_p{q}" for m in ("ttft", "e2e") for q in PERCENTILES]
ID_COLUMNS = ["point", *AXES, "capacity", "rate", "policy", "seed", "run_seed", "router", "scaler"]
RUN_COLUMNS = ["tasks", "goodput_rate", "goodput_per_s", *LATENCY, "utilization", "replica_seconds"]
TYPE_FIGURES = ["goodput_rate", "ttft_p95", "e2e_p95"]  # per task type, as <type>_<figure>


@dataclass(frozen=True)
class Grid:
    values: dict[str, tuple[float, ...]]
    base: dict[str, float]
    pairs: tuple[tuple[str, str], ...]

    def points(self) -> list[dict[str, float]]:
        """Every pair's values around the base, once each, in axis order."""
        seen = {}
        for a, b in self.pairs:
            for va in self.values[a]:
                for vb in self.values[b]:
                    p = {**self.base, a: va, b: vb}
                    seen[point_label(p)] = p
        if not seen:
            seen[point_label(self.base)] = dict(self.base)
        return sorted(seen.values(), key=lambda p: tuple(p[a] for a in AXES))


def point_label(p: dict[str, float]) -> str:
    return "_".join(f"{a}={p[a]:g}" for a in AXES)


def parse_values(axis: str, raw: str) -> tuple[float, ...]:
    """``0.3,0.6`` (``poisson`` is CV 1 on the cv axis)."""
    out = []
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        try:
            v = 1.0 if (axis == "cv" and item.lower() == "poisson") else float(item)
        except ValueError:
            raise InputError(f"--{axis}", item, "numbers separated by commas") from None
        if not (math.isfinite(v) and v > 0) or (axis == "cv" and v < 1):
            raise InputError(f"--{axis}", item, "a CV >= 1 (1: Poisson)" if axis == "cv" else "a number > 0")
        out.append(v)
    if not out or len(set(out)) != len(out):
        raise InputError(f"--{axis}", raw, "distinct values separated by commas")
    return tuple(sorted(out))


def make_grid(
    values: dict[str, str] | None = None, base: dict[str, str] | None = None, pairs: str | None = None
) -> Grid:
    """The grid from option strings: values per axis (default ``DEFAULT_VALUES``), base per
    axis (default ``DEFAULT_BASE``, else the nearest value), pairs like ``load:sla,load:cv``
    (default every pair of axes with two values or more)."""
    values, base = values or {}, base or {}
    for key in (*values, *base):
        if key not in AXES:
            raise InputError("explore", key, f"an axis of {list(AXES)}")
    vals = {a: parse_values(a, values[a]) if a in values else DEFAULT_VALUES[a] for a in AXES}
    bases = {}
    for a in AXES:
        b = parse_values(a, base[a])[0] if a in base else DEFAULT_BASE[a]
        bases[a] = b if a in base else min(vals[a], key=lambda v, b=b: (abs(v - b), v))
    if pairs is None:
        chosen = [(a, b) for a, b in combinations(AXES, 2) if len(vals[a]) > 1 and len(vals[b]) > 1]
    else:
        chosen = []
        for item in (x.strip() for x in pairs.split(",") if x.strip()):
            a, _, b = item.partition(":")
            if a not in AXES or b not in AXES or a == b:
                raise InputError("--pairs", item, f"two different axes of {list(AXES)}, e.g. load:sla")
            chosen.append((a, b) if AXES.index(a) < AXES.index(b) else (b, a))
    return Grid(vals, bases, tuple(dict.fromkeys(chosen)))


def _slowed_profile(spec_profile: str, factor: float, out: Path) -> str:
    """The profile file of a model at ``factor``: the original for 1, else a slowed copy."""
    if factor == 1:
        return spec_profile
    prof = slowed(load_profile(spec_profile), factor)
    path = out / "profiles" / f"{prof.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_profile(prof, path)
    return str(path.resolve())


def _at_speed(tree: dict, factor: float, out: Path) -> dict:
    tree = json.loads(json.dumps(tree))
    for spec in tree["models"].values():
        spec["profile"] = _slowed_profile(spec["profile"], factor, out)
    return tree


def _capacity_key(tree: dict, factor: float) -> str:
    """What capacity depends on: models, cluster, task graphs, the mix and lengths, seed."""
    gen = tree["trace"]["generate"]
    what = {k: tree[k] for k in ("models", "cluster", "task_types", "default_model", "seed")}
    what.update(mix=gen["mix"], lengths=gen["lengths"], slowdown=factor)
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def capacities(tree: dict, base_dir: Path, out: Path, slowdowns) -> dict[str, dict]:
    """Measured capacity per slowdown, cached in DIR/capacity.json under a key of what it
    depends on (so a changed experiment is measured again)."""
    from cato_sim.capacity import measure_capacity

    path = out / "capacity.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    result = {}
    for k in slowdowns:
        key = _capacity_key(tree, k)
        if cache.get(f"{k:g}", {}).get("key") != key:
            exp = Experiment.model_validate(_at_speed(tree, k, out))
            figs = measure_capacity(exp, base_dir, out / "capacity" / f"slowdown={k:g}", exp.seed)
            cache[f"{k:g}"] = {"key": key, **figs}
        result[f"{k:g}"] = cache[f"{k:g}"]
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cache, indent=2, sort_keys=True) + "\n")
    return result


def plan_explore(
    exp: Experiment, base_dir: Path, out: Path, grid: Grid, policies: list[str], seeds: int, tasks: int, cato: str
) -> dict:
    """The plan (saved as explore.json); measures the capacities it needs."""
    if exp.trace.generate is None:
        raise InputError(exp.name, "trace", "a 'generate' trace: explore sets its rate, arrivals and length")
    if seeds < 1:
        raise InputError("--seeds", str(seeds), "at least 1")
    if tasks < 1:
        raise InputError("--tasks", str(tasks), "at least 1")
    setups = resolve_policies(exp, policies)
    if cato not in policies or len(policies) < 2:
        raise InputError("--policies", ",".join(policies), f"{cato!r} and at least one baseline")
    from cato_sim.runner import resolve_profiles

    out, base_dir = Path(out).resolve(), Path(base_dir).resolve()
    exp = exp.model_copy(deep=True)
    resolve_profiles(exp, base_dir)
    tree = exp.model_dump(mode="json")
    points = grid.points()
    caps = capacities(tree, base_dir, out, sorted({p["slowdown"] for p in points}))
    for p in points:
        cap = caps[f"{p['slowdown']:g}"]["capacity"]
        p.update(point=point_label(p), capacity=cap, rate=p["load"] * cap)
    return {
        "experiment": exp.name,
        "experiment_config": tree,
        "base_dir": str(base_dir),
        "cato": cato,
        "policies": [s.model_dump(mode="json") for s in setups],
        "grid": {"values": grid.values, "base": grid.base, "pairs": grid.pairs},
        "points": points,
        "seeds": seeds,
        "run_seeds": [run_seed(exp.seed, i) for i in range(seeds)],
        "tasks": tasks,
        "task_types": sorted(t for t, w in exp.trace.generate.mix.items() if w > 0),
    }


def point_tree(plan: dict, p: dict, out: Path) -> dict:
    """The experiment at point ``p``: its rate, arrivals, SLAs and profiles."""
    tree = _at_speed(plan["experiment_config"], p["slowdown"], out)
    gen = tree["trace"]["generate"]
    gen.update(rate=p["rate"], num_tasks=plan["tasks"], duration_s=None)
    gen.update(arrivals="poisson", cv=None) if p["cv"] == 1 else gen.update(arrivals="gamma", cv=p["cv"])
    for t in tree["task_types"].values():
        t["sla"] = {"multiple": p["sla"]}
    return tree


def run_dir(p: dict, policy: str, seed: int) -> str:
    return f"runs/{p['point']}/{policy}/seed={seed}"


def jobs_of(plan: dict, out: Path) -> list[dict]:
    """One sweep job per (point, policy, seed), in that order."""
    out = Path(out).resolve()
    jobs = []
    for p in plan["points"]:
        tree = point_tree(plan, p, out)
        for setup in plan["policies"]:
            for i, seed in enumerate(plan["run_seeds"]):
                run = out / run_dir(p, setup["name"], i)
                jobs.append(make_job(plan, tree, setup, p["rate"], i, seed, run, point=p["point"]))
    return jobs


def _done(job: dict) -> bool:
    """A run folder that already holds this very job's result (for --resume)."""
    folder = Path(job["out"])
    saved = folder / "job.json"
    return (folder / "summary.json").is_file() and saved.is_file() and json.loads(saved.read_text()) == job


@dataclass
class ExploreResult:
    frame: pd.DataFrame  # explore.parquet
    failures: list[dict] = field(default_factory=list)
    out: Path = Path(".")


def run_explore(
    exp: Experiment,
    base_dir: Path,
    out: Path,
    grid: Grid,
    policies: list[str] = DEFAULT_POLICIES,
    seeds: int = 3,
    tasks: int = DEFAULT_TASKS,
    workers: int | None = None,
    ray_address: str | None = None,
    cato: str = "cato",
    resume: bool = False,
    progress=None,
) -> ExploreResult:
    """Run every (point, policy, seed) not already done (``resume``) and collect."""
    out = Path(out)
    plan = plan_explore(exp, base_dir, out, grid, list(policies), seeds, tasks, cato)
    jobs = jobs_of(plan, out)
    todo = [j for j in jobs if not (resume and _done(j))]
    for job in todo:  # written first, so a resumed explore knows what each folder ran
        Path(job["out"]).mkdir(parents=True, exist_ok=True)
        (Path(job["out"]) / "job.json").write_text(json.dumps(job, sort_keys=True) + "\n")
    records = execute(todo, workers, ray_address)
    (out / "explore.json").write_text(json.dumps(plan, indent=2) + "\n")
    follow(records, progress, f"{exp.name}: explore runs", len(todo))
    return collect(out)


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _row(summary: dict, p: dict, job: dict, task_types: list[str]) -> dict:
    setup = summary["config"]["setup"]
    row = {
        **{k: p[k] for k in ("point", *AXES, "capacity", "rate")},
        "policy": job["policy"],
        "seed": int(job["seed"]),
        "run_seed": int(job["run_seed"]),
        "router": setup["router"],
        "scaler": setup["scaler"],
        "tasks": int(summary["tasks"]),
        **{c: _num(summary.get(c)) for c in RUN_COLUMNS[1:]},
    }
    for t in task_types:
        figs = summary["by_task_type"].get(t, {})
        row.update({f"{t}_{c}": _num(figs.get(c)) for c in TYPE_FIGURES})
    # no wall time (it is in summary.json): the same plan gives a byte-identical table
    row["run_dir"] = run_dir(p, job["policy"], job["seed"])
    return row


def columns(task_types: list[str]) -> list[str]:
    return [
        *ID_COLUMNS,
        *RUN_COLUMNS,
        *[f"{t}_{c}" for t in task_types for c in TYPE_FIGURES],
        "run_dir",
    ]


def collect(out: Path) -> ExploreResult:
    """DIR/explore.parquet and DIR/failures.json from DIR/explore.json and the run folders."""
    out = Path(out)
    if not (out / "explore.json").is_file():
        raise InputError(str(out), "explore.json", "a folder written by `cato-sim explore`")
    plan = json.loads((out / "explore.json").read_text())
    points = {p["point"]: p for p in plan["points"]}
    rows, failures = [], []
    for job in jobs_of(plan, out):
        p, folder = points[job["point"]], Path(job["out"])
        if (folder / "summary.json").is_file():
            rows.append(_row(json.loads((folder / "summary.json").read_text()), p, job, plan["task_types"]))
            continue
        failure = folder / "failure.json"
        error = json.loads(failure.read_text())["error"] if failure.is_file() else "no result (not run or interrupted)"
        failures.append({"point": p["point"], "policy": job["policy"], "seed": job["seed"], "error": error})
    frame = pd.DataFrame(rows, columns=columns(plan["task_types"]))
    frame = frame.astype({"seed": int, "run_seed": "int64", "tasks": int})
    frame.to_parquet(out / "explore.parquet", index=False)
    (out / "failures.json").write_text(json.dumps(failures, indent=2) + "\n")
    return ExploreResult(frame, failures, out)


def load_plan(out: Path) -> dict:
    return json.loads((Path(out) / "explore.json").read_text())


def gains_of(out: Path, column: str = "goodput_rate", relative: bool = False) -> pd.DataFrame:
    """The gain table (cato_report.explore_gain) of DIR's explore.parquet."""
    from cato_report.explore_gain import gain_table

    frame = pd.read_parquet(Path(out) / "explore.parquet")
    return gain_table(frame, column, load_plan(out)["cato"], relative)


def write_report(out: Path, plots: bool = True) -> tuple[pd.DataFrame, list[Path]]:
    """DIR/gain.md and DIR/plots/gain_<a>_<b>.png from DIR's files; returns the gains and files."""
    from cato_report.explore_gain import gain_markdown

    out = Path(out)
    plan, gains = load_plan(out), gains_of(out)
    path = out / "gain.md"
    path.write_text(gain_markdown(gains, plan["cato"], plan["seeds"]))
    written = [path]
    if plots and not gains.empty:
        from cato_report.explore_plots import plot_explore

        written += plot_explore(gains, plan["grid"]["pairs"], plan["grid"]["base"], out / "plots", plan["cato"])
    return gains, written
