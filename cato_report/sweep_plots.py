"""Plots of a sweep (policies x arrival rates x seeds), drawn from its result files alone.

Input: the sweep.parquet frame (one row per run and task type, see cato_sim.sweep) and, for
replicas over time, the sweep folder's run tables. Curves are the mean over seeds with a 95%
confidence band of that mean (Student's t over the seeds; no band from a single seed).
Figures are built with matplotlib's object API (no pyplot state): safe in notebooks too.
``plot_sweep(DIR)`` redraws every PNG of DIR/plots.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cato_report.plots import replicas_over_time

RUN_KEYS = ["policy", "rate", "seed"]
# Student's t, two-sided 95%, by degrees of freedom 1..30; beyond, 1.96 + 2.5/df (within 0.002)
_T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.5 / df


def policies(frame: pd.DataFrame) -> list[str]:
    """Policies in the sweep's order (sweep.parquet is sorted by it)."""
    return list(dict.fromkeys(frame["policy"]))


def runs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the run-level columns (all_*, utilization, ...)."""
    return frame.drop_duplicates(RUN_KEYS).reset_index(drop=True)


def band(frame: pd.DataFrame, value: str, by: list[str] | None = None) -> pd.DataFrame:
    """Mean of ``value`` over seeds with its 95% CI, per ``by`` (default policy, rate).

    Columns: by..., mean, lo, hi, n (seeds with a value). lo = hi = mean when n < 2.
    """
    by = by or ["policy", "rate"]
    rows = []
    for keys, g in frame.groupby(by, sort=False):
        v = g[value].dropna().to_numpy(dtype=float)
        n = v.size
        mean = float(v.mean()) if n else np.nan
        half = t975(n - 1) * float(v.std(ddof=1)) / np.sqrt(n) if n >= 2 else 0.0
        rows.append(
            {
                **dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True)),
                "mean": mean,
                "lo": mean - half,
                "hi": mean + half,
                "n": n,
            }
        )
    out = pd.DataFrame(rows, columns=[*by, "mean", "lo", "hi", "n"])
    return out.sort_values(by, key=_policy_order(frame), kind="stable").reset_index(drop=True)


def _policy_order(frame: pd.DataFrame):
    order = {p: i for i, p in enumerate(policies(frame))}
    return lambda c: c.map(order) if c.name == "policy" else c


def goodput_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Overall Goodput rate, mean over seeds: policies x rates."""
    b = band(runs(frame), "all_goodput_rate")
    return b.pivot(index="policy", columns="rate", values="mean").reindex(policies(frame))


def draw_curves(ax, frame: pd.DataFrame, value: str, clip: tuple[float, float] | None = None) -> None:
    """One line per policy: mean ``value`` over seeds vs rate, with its 95% band."""
    b = band(frame, value)
    for p in policies(frame):
        g = b[b["policy"] == p].dropna(subset=["mean"])
        if g.empty:
            continue
        lo, hi = g["lo"].to_numpy(), g["hi"].to_numpy()
        if clip is not None:
            lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
        (line,) = ax.plot(g["rate"], g["mean"], marker="o", label=p)
        ax.fill_between(g["rate"], lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("arrival rate (tasks/s)")
    ax.grid(alpha=0.3)


def draw_goodput(ax, frame: pd.DataFrame, task_type: str | None = None) -> None:
    """Goodput rate vs arrival rate per policy; overall when ``task_type`` is None."""
    if task_type is None:
        draw_curves(ax, runs(frame), "all_goodput_rate", clip=(0, 1))
    else:
        draw_curves(ax, frame[frame["task_type"] == task_type], "goodput_rate", clip=(0, 1))
    ax.set_title(task_type or "all task types")
    ax.set_ylabel("Goodput rate")
    ax.set_ylim(-0.02, 1.05)


def draw_latency(ax, frame: pd.DataFrame, metric: str, task_type: str) -> None:
    """``metric`` (e.g. ttft_p95, e2e_p95) of one task type vs arrival rate per policy."""
    sub = frame[frame["task_type"] == task_type]
    draw_curves(ax, sub, metric)
    ax.set_title(f"{task_type}: {metric.replace('_', ' ').upper()}")
    ax.set_ylabel("seconds")
    if (sub[metric].dropna() > 0).any():
        ax.set_yscale("log")


def _figure(ncols: int, nrows: int = 1, size: tuple[float, float] = (4.2, 3.4)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def _legend(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), frameon=False)


def _save(fig, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    return path


def plot_goodput(frame: pd.DataFrame, out: Path) -> Path:
    types = sorted(frame["task_type"].unique())
    fig, axes = _figure(len(types) + 1)
    draw_goodput(axes[0, 0], frame)
    for ax, t in zip(axes[0, 1:], types, strict=True):
        draw_goodput(ax, frame, t)
    _legend(fig, axes[0, 0])
    return _save(fig, out / "goodput_vs_rate.png")


def plot_latency(frame: pd.DataFrame, out: Path, metrics=("ttft_p95", "e2e_p95")) -> Path:
    types = sorted(frame["task_type"].unique())
    fig, axes = _figure(max(len(types), 1), len(metrics))
    for row, m in zip(axes, metrics, strict=True):
        for ax, t in zip(row, types, strict=False):  # no task types: one axis, left empty
            draw_latency(ax, frame, m, t)
    _legend(fig, axes[0, 0])
    return _save(fig, out / "latency_p95_vs_rate.png")


def plot_utilization(frame: pd.DataFrame, out: Path) -> Path:
    fig, axes = _figure(1, size=(6, 3.8))
    ax = axes[0, 0]
    draw_curves(ax, runs(frame), "utilization", clip=(0, 1))
    ax.set_ylabel("utilization (busy / provisioned)")
    ax.set_ylim(0, 1.05)
    _legend(fig, ax)
    return _save(fig, out / "utilization_vs_rate.png")


def replica_runs(frame: pd.DataFrame, rate: float | None = None, seed: int | None = None) -> pd.DataFrame:
    """One run per policy: at ``rate`` (default the highest) and ``seed`` (default the lowest)."""
    r = runs(frame)
    picked = []
    for p in policies(frame):
        g = r[r["policy"] == p]
        g = g[g["rate"] == (g["rate"].max() if rate is None else rate)]
        g = g[g["seed"] == (g["seed"].min() if seed is None else seed)]
        picked.append(g.head(1))
    return pd.concat(picked, ignore_index=True) if picked else r.head(0)


def draw_replicas(ax, sweep_dir: Path, frame: pd.DataFrame, rate: float | None = None, seed: int | None = None) -> None:
    for _, run in replica_runs(frame, rate, seed).iterrows():
        folder = Path(sweep_dir) / run["run_dir"]
        reps = pd.read_parquet(folder / "replicas.parquet")
        end = json.loads((folder / "summary.json").read_text()).get("simulated_s") or float(reps["released_s"].max())
        t, count = replicas_over_time(reps, float(end))
        ax.step(t, count, where="post", label=f"{run['policy']} (rate {run['rate']:g}, seed {run['seed']})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("replicas provisioned")
    ax.grid(alpha=0.3)
    ax.legend()


def plot_replicas(frame: pd.DataFrame, sweep_dir: Path, out: Path) -> Path:
    fig, axes = _figure(1, size=(8, 3.6))
    draw_replicas(axes[0, 0], sweep_dir, frame)
    fig.tight_layout()
    fig.savefig(out / "replicas_over_time.png", dpi=110)
    return out / "replicas_over_time.png"


def plot_sweep(sweep_dir: Path, frame: pd.DataFrame | None = None, out: Path | None = None) -> list[Path]:
    """Every sweep plot into ``out`` (default DIR/plots), from DIR/sweep.parquet and DIR/runs."""
    sweep_dir = Path(sweep_dir)
    frame = pd.read_parquet(sweep_dir / "sweep.parquet") if frame is None else frame
    out = Path(out) if out is not None else sweep_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        return []
    return [
        plot_goodput(frame, out),
        plot_latency(frame, out),
        plot_utilization(frame, out),
        plot_replicas(frame, sweep_dir, out),
    ]
