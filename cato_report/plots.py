"""Plots of a run or a comparison of runs, drawn from the result files alone.

matplotlib is imported by the drawing functions, not here: it takes longer to load than a
small run takes, so code that only needs ``replicas_over_time`` (or a run without plots)
never pays for it. Figures use the object API on Agg canvases (files only, no display, no
pyplot state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cato_report.summary import read_result


def _figure(**kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def replicas_over_time(replicas: pd.DataFrame, end: float) -> tuple[np.ndarray, np.ndarray]:
    """Step function of provisioned replicas (asked to released), one point per change.

    Replicas still up when the run ended count until ``end``: the curve stops there rather
    than dropping to zero.
    """
    asked = replicas["asked_s"].to_numpy(dtype=float)
    released = replicas["released_s"].to_numpy(dtype=float)
    released = released[released < end]
    times = np.concatenate([asked, released, [0.0, end]])
    deltas = np.concatenate([np.ones(asked.size), -np.ones(released.size), [0.0, 0.0]])
    t, inverse = np.unique(times, return_inverse=True)
    return t, np.cumsum(np.bincount(inverse, weights=deltas))


def plot_comparison(runs: dict[str, Path], summaries: dict[str, dict], out: Path) -> list[Path]:
    """Goodput, P95 latency and replicas over time, one colour per set-up."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(runs)
    types = sorted({t for s in summaries.values() for t in s["by_task_type"]})
    width = 0.8 / max(len(names), 1)
    written = []

    fig = _figure(figsize=(8, 4))
    ax = fig.subplots()
    x = np.arange(len(types) + 1)
    for i, n in enumerate(names):
        s = summaries[n]
        vals = [s["by_task_type"].get(t, {}).get("goodput_rate") or 0 for t in types] + [s["goodput_rate"] or 0]
        ax.bar(x + i * width, vals, width, label=n)
    ax.set_xticks(x + width * (len(names) - 1) / 2, types + ["all"])
    ax.set_ylabel("Goodput rate (share of tasks within SLA)")
    ax.set_ylim(0, 1.2)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(ncol=len(names), loc="upper center")
    fig.tight_layout()
    written.append(out / "goodput.png")
    fig.savefig(written[-1], dpi=110)

    fig = _figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("ttft_p95", "e2e_p95"), strict=True):
        x = np.arange(len(types))
        for i, n in enumerate(names):
            vals = [summaries[n]["by_task_type"].get(t, {}).get(metric) or 0 for t in types]
            ax.bar(x + i * width, vals, width, label=n)
        ax.set_xticks(x + width * (len(names) - 1) / 2, types)
        ax.set_ylabel(f"{metric.replace('_', ' ').upper()} (s)")
        ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    written.append(out / "latency_p95.png")
    fig.savefig(written[-1], dpi=110)

    fig = _figure(figsize=(8, 3.5))
    ax = fig.subplots()
    for n, folder in runs.items():
        reps = read_result(folder / "replicas.parquet", ["asked_s", "released_s"])
        t, count = replicas_over_time(reps, float(summaries[n].get("simulated_s") or reps["released_s"].max()))
        ax.step(t, count, where="post", label=n)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("replicas provisioned")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    fig.tight_layout()
    written.append(out / "replicas.png")
    fig.savefig(written[-1], dpi=110)
    return written
