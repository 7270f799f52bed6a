"""Heatmaps of an explore map: CATO's Goodput gain over the strongest baseline, per pair of axes.

One PNG per pair the plan varied (the other two axes at their base): the colour is the mean
gain in points of Goodput rate (diverging, 0 white), each cell gives the gain and its 95%
interval, and the strongest baseline's name where it is not the pair's most common one
(named in the title). matplotlib's object API only (no pyplot state), Agg output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cato_report.explore_gain import AXIS_NAMES, axis_value, points_fmt


def pair_cells(gains: pd.DataFrame, a: str, b: str, base: dict[str, float]) -> pd.DataFrame:
    """The points of the (a, b) map: every axis but a and b at its base."""
    keep = pd.Series(True, index=gains.index)
    for axis, v in base.items():
        if axis not in (a, b):
            keep &= gains[axis] == v
    return gains[keep]


def draw_pair(ax, gains: pd.DataFrame, a: str, b: str, base: dict[str, float]) -> str:
    """Draw one heatmap (a across, b up); returns the pair's most common strongest baseline."""
    cells = pair_cells(gains, a, b, base)
    xs, ys = sorted(cells[a].unique()), sorted(cells[b].unique())
    grid = np.full((len(ys), len(xs)), np.nan)
    for _, r in cells.iterrows():
        grid[ys.index(r[b]), xs.index(r[a])] = 100 * r["gain"]
    span = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0, 1.0)
    image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span, origin="lower", aspect="auto")
    common = cells["best_baseline"].mode().iloc[0] if len(cells) else "-"
    for _, r in cells.iterrows():
        text = "n/a" if np.isnan(r["gain"]) else points_fmt(r["gain"])
        if r["n"] >= 2 and not np.isnan(r["gain"]):
            text += f"\n[{points_fmt(r['lo'])}, {points_fmt(r['hi'])}]"
        if r["best_baseline"] != common:
            text += f"\nvs {r['best_baseline']}"
        ax.text(xs.index(r[a]), ys.index(r[b]), text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(xs)), [axis_value(a, v) for v in xs])
    ax.set_yticks(range(len(ys)), [axis_value(b, v) for v in ys])
    ax.set_xlabel(AXIS_NAMES[a] + (" (fraction of measured capacity)" if a == "load" else ""))
    ax.set_ylabel(AXIS_NAMES[b] + (" (gaps' CV; 1 = Poisson)" if b == "cv" else ""))
    ax.figure.colorbar(image, ax=ax, label="gain, points of Goodput rate")
    return common


def plot_explore(gains: pd.DataFrame, pairs, base: dict[str, float], out: Path, cato: str = "cato") -> list[Path]:
    """Every pair's heatmap into ``out``; returns the files."""
    from matplotlib.figure import Figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for a, b in pairs:
        fixed = ", ".join(f"{AXIS_NAMES[k]} {axis_value(k, v)}" for k, v in base.items() if k not in (a, b))
        fig = Figure(figsize=(6.4, 4.8))
        ax = fig.subplots()
        common = draw_pair(ax, gains, a, b, base)
        ax.set_title(f"{cato} minus the strongest baseline ({common} unless noted)\nelsewhere at {fixed}", fontsize=9)
        fig.tight_layout()
        path = out / f"gain_{a}_{b}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
