"""CATO's gain over the strongest baseline at each point of an explore map (explore.parquet).

The strongest baseline at a point is the non-CATO policy with the highest mean Goodput rate
over seeds there; ties (e.g. every policy at 100%) go to the fewer mean replica-seconds, then
to the earlier policy in the frame. The gain is CATO minus that baseline, paired by seed
(both ran the same trace), as a mean with a 95% Student t-interval over seeds (no interval
from one seed). Choosing the baseline by its mean on the same seeds favours the baseline
slightly, so the gain is if anything understated. ``relative``: CATO / baseline - 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cato_report.sweep_plots import t975

AXES = ("load", "sla", "cv", "slowdown")
AXIS_NAMES = {"load": "load", "sla": "SLA", "cv": "CV", "slowdown": "slowdown"}


def best_baselines(frame: pd.DataFrame, cato: str = "cato") -> pd.Series:
    """The strongest baseline's name per point (index: point)."""
    order = {p: i for i, p in enumerate(dict.fromkeys(frame["policy"]))}
    base = frame[frame["policy"] != cato]
    means = base.groupby(["point", "policy"], sort=False)[["goodput_rate", "replica_seconds"]].mean().reset_index()
    means["order"] = means["policy"].map(order)
    means = means.sort_values(
        ["point", "goodput_rate", "replica_seconds", "order"], ascending=[True, False, True, True]
    )
    return means.groupby("point", sort=False)["policy"].first()


def interval(values: np.ndarray) -> tuple[float, float, float, int]:
    """Mean and 95% t-interval of ``values`` (NaNs dropped): (mean, lo, hi, n)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(v.mean())
    half = t975(v.size - 1) * float(v.std(ddof=1)) / np.sqrt(v.size) if v.size >= 2 else 0.0
    return mean, mean - half, mean + half, int(v.size)


def gain_table(frame: pd.DataFrame, column: str = "goodput_rate", cato: str = "cato", relative=False) -> pd.DataFrame:
    """One row per point: its axes, rate, the strongest baseline, both means of ``column``
    and the paired gain with its 95% interval (gain, lo, hi, n)."""
    best = best_baselines(frame, cato)
    rows = []
    for point, g in frame.groupby("point", sort=False):
        name = best.get(point)
        a = g[g["policy"] == cato].set_index("seed")[column]
        b = g[g["policy"] == name].set_index("seed")[column]
        a, b = a.align(b, join="inner")
        diff = (a / b - 1) if relative else (a - b)
        mean, lo, hi, n = interval(diff.replace([np.inf, -np.inf], np.nan).to_numpy())
        first = g.iloc[0]
        rows.append(
            {
                "point": point,
                **{ax: float(first[ax]) for ax in AXES},
                "rate": float(first["rate"]),
                "best_baseline": name,
                "cato": float(a.mean()) if len(a) else np.nan,
                "baseline": float(b.mean()) if len(b) else np.nan,
                "gain": mean,
                "lo": lo,
                "hi": hi,
                "n": n,
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values(list(AXES), kind="stable").reset_index(drop=True) if rows else out


def axis_value(axis: str, v: float) -> str:
    if axis == "cv":
        return "Poisson" if v == 1 else f"{v:g}"
    return f"{v:g}x" if axis in ("sla", "slowdown") else f"{v:g}"


def points_fmt(v: float) -> str:
    return f"{100 * v:+.1f}"


def gain_cell(row) -> str:
    """``+3.1 [+0.4, +5.8]`` points of Goodput rate."""
    if np.isnan(row["gain"]):
        return "n/a"
    if row["n"] < 2:
        return points_fmt(row["gain"])
    return f"{points_fmt(row['gain'])} [{points_fmt(row['lo'])}, {points_fmt(row['hi'])}]"


HEADER = ["load", "SLA", "arrivals (CV)", "slowdown", "rate (tasks/s)", "CATO Goodput", "strongest baseline"]


def table_rows(gains: pd.DataFrame) -> list[list[str]]:
    """The gain table's cells (``HEADER`` + gain column), one list per point."""
    return [
        [
            axis_value("load", r["load"]),
            axis_value("sla", r["sla"]),
            axis_value("cv", r["cv"]),
            axis_value("slowdown", r["slowdown"]),
            f"{r['rate']:.3g}",
            f"{r['cato']:.1%}",
            f"{r['best_baseline']} {r['baseline']:.1%}",
            gain_cell(r),
        ]
        for _, r in gains.iterrows()
    ]


def gain_markdown(gains: pd.DataFrame, cato: str = "cato", seeds: int | None = None) -> str:
    head = [*HEADER, "gain, points (95% CI)"]
    lines = [
        f"Goodput rate gain of {cato} over the strongest baseline at each point"
        + (f" ({seeds} seeds; 95% t-intervals, paired by seed)." if seeds else "."),
        "Load is a fraction of the measured capacity; SLA a multiple of each task's isolated baseline.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(gains)]
    return "\n".join(lines) + "\n"


def _bound(axis: str, lo: float, hi: float, values: list[float]) -> str | None:
    name, fmt = AXIS_NAMES[axis], (lambda v: axis_value(axis, v))
    if lo == values[0] and hi == values[-1]:
        return None
    if lo == hi:
        return f"{name} = {fmt(lo)}"
    if hi == values[-1]:
        return f"{name} >= {fmt(lo)}"
    if lo == values[0]:
        return f"{name} <= {fmt(hi)}"
    return f"{fmt(lo)} <= {name} <= {fmt(hi)}"


def region(gains: pd.DataFrame, holds: pd.Series, axes=AXES) -> str:
    """Where ``holds`` is true, as bounds per axis (the smallest box of the map holding every
    such point), with how many of the map's points in that box hold: the box is a summary,
    exact only when they all do. Axes with one value on the map are left out."""
    holds = holds.astype(bool)
    if gains.empty:
        return "no map"
    if not holds.any():
        return "nowhere on the map"
    if holds.all():
        return f"everywhere on the map ({len(gains)} points)"
    parts, inside = [], pd.Series(True, index=gains.index)
    for a in axes:
        values = sorted(gains[a].unique())
        got = gains.loc[holds, a]
        lo, hi = float(got.min()), float(got.max())
        inside &= gains[a].between(lo, hi)
        bound = _bound(a, lo, hi, values)
        if bound:
            parts.append(bound)
    text = " and ".join(parts) if parts else "across every axis' range"
    return f"{text} ({int((holds & inside).sum())} of {int(inside.sum())} map points there)"
