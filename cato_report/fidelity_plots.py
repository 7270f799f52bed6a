"""Plots of the fidelity report: the simulated run beside the live run(s) of one trace.

cdf_ttft.png, cdf_e2e.png   per task type, the CDF of task TTFT / E2E, one curve per run
wait_prediction.png         the router's predicted wait against the actual one, per run
replicas_over_time.png      provisioned replicas over the run, one curve per run

The live replicas table is on the gateway's clock, which starts before its initial
replicas (tens of seconds before the replay's clock starts); it is shifted so that the
run's end (where replicas still up are released) falls at the replay's end, and times
before the replay are drawn at 0. Drawn on Agg canvases like cato_report.plots.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cato_report.plots import _figure, replicas_over_time
from cato_report.summary import read_result

STYLE = {
    "sim": {"color": "tab:blue"},
    "live": {"color": "tab:orange"},
    "live2": {"color": "tab:green", "ls": "--"},
    "sim_at_live_speed": {"color": "tab:purple", "ls": ":"},
}


def _cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.sort(values[np.isfinite(values)])
    return v, np.arange(1, v.size + 1) / max(v.size, 1)


def plot_cdfs(runs: dict[str, Path], out: Path) -> list[Path]:
    from matplotlib.ticker import NullFormatter

    tasks = {side: read_result(d / "tasks.parquet", ["task_type", "ttft_s", "e2e_s"]) for side, d in runs.items()}
    types = sorted(set().union(*(set(t["task_type"]) for t in tasks.values())))
    written = []
    for metric in ("ttft", "e2e"):
        fig = _figure(figsize=(4 * max(len(types), 1), 3.6))
        axes = np.atleast_1d(fig.subplots(1, max(len(types), 1)))
        for ax, ttype in zip(axes, types, strict=False):
            for side, t in tasks.items():
                x, y = _cdf(t.loc[t["task_type"] == ttype, f"{metric}_s"].to_numpy(dtype=float))
                if x.size:
                    ax.step(x, y, where="post", label=f"{side} ({x.size})", **STYLE.get(side, {}))
            ax.set_title(ttype)
            ax.set_xlabel(f"{metric.upper()} (s)")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log span overlap
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
        axes[0].set_ylabel("share of tasks")
        fig.tight_layout()
        written.append(out / f"cdf_{metric}.png")
        fig.savefig(written[-1], dpi=110)
    return written


def plot_wait_prediction(runs: dict[str, Path], out: Path) -> Path:
    fig = _figure(figsize=(4.2 * len(runs), 4))
    axes = np.atleast_1d(fig.subplots(1, len(runs)))
    for ax, (side, d) in zip(axes, runs.items(), strict=True):
        n = read_result(d / "nodes.parquet", ["kind", "predicted_wait_s", "wait_s"])
        n = n[(n["kind"] == "llm") & n["predicted_wait_s"].notna() & n["wait_s"].notna()]
        pred, actual = n["predicted_wait_s"].to_numpy(float), n["wait_s"].to_numpy(float)
        ax.scatter(pred, actual, s=8, alpha=0.6, **{k: v for k, v in STYLE.get(side, {}).items() if k == "color"})
        top = float(max(pred.max(initial=0), actual.max(initial=0))) or 1e-3
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls=":", label="actual = predicted")
        ax.set_title(f"{side}: {len(n)} calls")
        ax.set_xlabel("predicted wait at routing (s)")
        ax.set_ylabel("actual wait (s)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = out / "wait_prediction.png"
    fig.savefig(path, dpi=110)
    return path


def _run_end(d: Path) -> tuple[float, bool]:
    """The run's end on its own clock, and whether it was live (a replay)."""
    summary = json.loads((d / "summary.json").read_text())
    if "simulated_s" in summary:
        return float(summary["simulated_s"]), False
    return float(summary.get("replayed_s") or 0.0), True


def plot_replicas(runs: dict[str, Path], out: Path) -> Path:
    fig = _figure(figsize=(8, 3.6))
    ax = fig.subplots()
    for side, d in runs.items():
        r = read_result(d / "replicas.parquet", ["asked_s", "released_s"])
        end, live = _run_end(d)
        if live and len(r):
            shift = float(r["released_s"].max()) - end  # gateway clock -> replay clock
            r = r.assign(asked_s=(r["asked_s"] - shift).clip(lower=0), released_s=r["released_s"] - shift)
        t, n = replicas_over_time(r, end)
        ax.step(t, n, where="post", label=side, **STYLE.get(side, {}))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("replicas provisioned")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "replicas_over_time.png"
    fig.savefig(path, dpi=110)
    return path


def plot_fidelity(runs: dict[str, Path], out: Path) -> list[Path]:
    """Every fidelity plot of ``runs`` (side -> run folder: sim, live, live2) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return [*plot_cdfs(runs, out), plot_wait_prediction(runs, out), plot_replicas(runs, out)]
