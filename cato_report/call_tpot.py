"""The LLM calls' decode speed, from a run's nodes.parquet: time per output token (TPOT).

A call's TPOT is (end - first token) / (output tokens - 1): the mean gap between its tokens
after the first, as ``vllm bench serve`` and guidellm report it. Counted: LLM calls that
ended ok with at least 2 output tokens. A task's TTFT and E2E mix the queue, the routing and
the engine's speed; a call's TPOT is the engine's decode in the batch it ran in, with the
prefills and front ends that interrupted it. So when the simulator gets TPOT right and TTFT
wrong, its queue is wrong; the other way round, its engine.

pyarrow and numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COLUMNS = ["task_id", "kind", "first_token_s", "end_s", "output_tokens", "status"]


def call_tpots(nodes: str | Path) -> pa.Table:
    """(task_id, tpot_s) of every counted call of ``nodes`` (a nodes.parquet)."""
    with pq.ParquetFile(nodes) as f:
        t = f.read(columns=COLUMNS)
    counted = pc.and_(
        pc.and_(pc.equal(t["kind"], "llm"), pc.equal(t["status"], "ok")),
        pc.and_(pc.greater_equal(t["output_tokens"], 2), pc.is_finite(t["first_token_s"])),
    )
    t = t.filter(pc.fill_null(counted, False))
    tpot = pc.divide(pc.subtract(t["end_s"], t["first_token_s"]), pc.subtract(t["output_tokens"], 1.0))
    return pa.table({"task_id": t["task_id"], "tpot_s": tpot})


def tpot_figures(values: np.ndarray) -> dict:
    """{"calls", "tpot_p50", "tpot_p95"} (numpy's linear percentiles; None without calls)."""
    if values.size == 0:
        return {"calls": 0, "tpot_p50": None, "tpot_p95": None}
    return {
        "calls": int(values.size),
        "tpot_p50": float(np.percentile(values, 50)),
        "tpot_p95": float(np.percentile(values, 95)),
    }


def call_tpot(nodes: str | Path, tasks: pa.Table) -> dict:
    """TPOT figures of the calls of ``nodes``, overall and by the task type of their task
    (``tasks``: the run's task_id and task_type columns)."""
    calls = call_tpots(nodes)
    type_of = dict(zip(tasks["task_id"].to_pylist(), tasks["task_type"].to_pylist(), strict=True))
    types = np.array([type_of.get(i) for i in calls["task_id"].to_pylist()], dtype=object)
    tpot = calls["tpot_s"].to_numpy().astype(float)
    return {
        "overall": tpot_figures(tpot),
        "by_task_type": {t: tpot_figures(tpot[types == t]) for t in sorted(set(type_of.values()))},
    }
