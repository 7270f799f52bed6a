"""How well the router predicted the wait of the calls it routed, from a run's nodes.parquet.

The router picks a replica by its estimate of the work ahead (W_k, ``predicted_wait_s``);
``wait_s`` is what the call then waited, from routing to the engine taking it. Counted: the
LLM nodes that ran, i.e. with both numbers (tool nodes and calls that never reached an
engine have no wait).

- absolute error: |predicted - actual| seconds;
- relative error: |predicted - actual| / max(actual, ``floor_s``). Most calls on a replica
  with a free slot wait (almost) nothing, and a ratio to a near-zero wait is noise, not a
  figure; the floor, by default 10 ms (about one engine step: a decode step of a 7B model
  on an A100, a few steps of the tiny CPU model; live waits also carry that much HTTP and
  event-loop jitter), says "an error smaller than a step on a call that hardly waited is
  small".

pyarrow and numpy only: ``cato-sim run`` summaries may call it on large tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

WAIT_FLOOR_S = 0.01
COLUMNS = ["kind", "predicted_wait_s", "wait_s"]


def wait_errors(predicted: np.ndarray, actual: np.ndarray, floor_s: float = WAIT_FLOOR_S) -> dict:
    """Median absolute and relative error of ``predicted`` against ``actual`` waits (seconds)."""
    if predicted.size == 0:
        return {"median_abs_err_s": None, "median_abs_rel_err": None, "calls": 0}
    err = np.abs(predicted - actual)
    return {
        "median_abs_err_s": float(np.median(err)),
        "median_abs_rel_err": float(np.median(err / np.maximum(actual, floor_s))),
        "calls": int(predicted.size),
    }


def wait_prediction(nodes: str | Path, floor_s: float = WAIT_FLOOR_S) -> dict:
    """{"median_abs_err_s", "median_abs_rel_err", "calls"} of the LLM nodes of ``nodes``
    (a nodes.parquet) that have both a predicted and an actual wait; None figures if none has."""
    with pq.ParquetFile(nodes) as f:
        t = f.read(columns=COLUMNS)
    ran = pc.and_(
        pc.equal(t["kind"], "llm"),
        pc.and_(pc.is_finite(t["predicted_wait_s"]), pc.is_finite(t["wait_s"])),
    )
    t = t.filter(pc.fill_null(ran, False))
    return wait_errors(
        t["predicted_wait_s"].to_numpy().astype(float),
        t["wait_s"].to_numpy().astype(float),
        floor_s,
    )
