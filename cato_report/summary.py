"""The paper's metrics, computed from the result tables alone (sim and live alike).

Goodput rate: share of tasks that met their SLA. Latency: P50/P95/P99 of task TTFT and E2E
per task type. Utilization: busy accelerator-seconds / provisioned accelerator-seconds,
provisioned from the request for a replica (cold start included) to its release.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

PERCENTILES = (50, 95, 99)
TASK_COLUMNS = ["task_type", "arrival_s", "ttft_s", "e2e_s", "met", "status"]  # what summarize reads
REPLICA_COLUMNS = ["model", "asked_s", "released_s", "busy_s"]


def read_result(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One result table (or some of its columns) as a DataFrame.

    The same frame as ``pd.read_parquet(path, columns=...)``, read through pyarrow's
    ParquetFile: half the time on a run's tables, and no dataset layer imported for it.
    """
    with pq.ParquetFile(path) as f:
        return f.read(columns=columns).to_pandas()


def summarize_files(tasks: str | Path, replicas: str | Path, accelerators: dict[str, int] | None = None) -> dict:
    """``summarize`` of a run's tasks.parquet and replicas.parquet, reading only what it uses."""
    return summarize(read_result(tasks, TASK_COLUMNS), read_result(replicas, REPLICA_COLUMNS), accelerators)


def _pct(values: pd.Series, q: float) -> float | None:
    v = values.dropna().to_numpy()
    return float(np.percentile(v, q)) if v.size else None


def _latency(df: pd.DataFrame) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for col in ("ttft", "e2e"):
        for q in PERCENTILES:
            out[f"{col}_p{q}"] = _pct(df[f"{col}_s"], q)
    return out


def summarize(tasks: pd.DataFrame, replicas: pd.DataFrame, accelerators: dict[str, int] | None = None) -> dict:
    """Overall and per-task-type figures. ``accelerators``: accelerators per replica, by model."""
    acc = replicas["model"].map(accelerators or {}).fillna(1) if len(replicas) else pd.Series(dtype=float)
    provisioned = float(((replicas["released_s"] - replicas["asked_s"]) * acc).sum()) if len(replicas) else 0.0
    busy = float((replicas["busy_s"] * acc).sum()) if len(replicas) else 0.0
    n = len(tasks)
    span = float(tasks["arrival_s"].max() - tasks["arrival_s"].min()) if n else 0.0
    met = int(tasks["met"].sum())
    summary = {
        "tasks": n,
        "tasks_by_status": {s: int(c) for s, c in tasks["status"].value_counts().sort_index().items()},
        "goodput_rate": met / n if n else None,
        "goodput_per_s": met / span if span > 0 else None,
        "utilization": busy / provisioned if provisioned > 0 else None,
        "replica_seconds": float((replicas["released_s"] - replicas["asked_s"]).sum()) if len(replicas) else 0.0,
        "accelerator_seconds": provisioned,
        **_latency(tasks),
        "by_task_type": {},
    }
    for ttype, g in tasks.groupby("task_type", sort=True):
        summary["by_task_type"][ttype] = {
            "tasks": len(g),
            "goodput_rate": float(g["met"].mean()),
            **_latency(g),
        }
    return _clean(summary)


def _clean(x):
    """JSON-safe: NaN becomes None."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, float) and math.isnan(x):
        return None
    return x
