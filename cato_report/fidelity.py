"""The simulator's fidelity: one trace simulated and replayed live, compared from their tables.

Per task type and overall: P50/P95 of task TTFT and E2E (numpy's linear percentile of the
tasks that have the figure, as cato_report.summary computes them), ``rel_err`` = sim / live
- 1; the Goodput rate (share of the tasks that met their SLA), ``abs_err`` = sim - live. The
goal: P50 within 10%, P95 within 15%, Goodput within 3 points (``goal_met`` per row). With a
second live run of the same trace, ``live_spread`` (live2 / live - 1, or live2 - live for
Goodput) says how much live runs differ among themselves, and ``within_2x_spread`` whether
the simulator's error is at most twice that. Under ``calls``, the LLM calls' time per output
token (cato_report.call_tpot; P50/P95 and their ``rel_err``, no goal): the engine's decode
speed apart from the queue. Also the router's wait prediction on each side
(cato_report.wait_prediction) and, given the profiles, how fast each side's engine ran
against them (cato_report.engine_speed): a live engine far from its profile's speed is
drift of the machine, which the errors above then carry. Given a simulated run at the live
engine's speed (cato-live validate's sim_at_live_speed), ``at_live_speed`` holds its rows
against live as well: the model's error with that drift taken out.

Every task of the trace must be in each side's tasks.parquet exactly once:
:func:`check_every_task_once` raises :class:`LostTasks` otherwise. Pure: reads tables, returns
dicts; pyarrow and numpy only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cato_core.profile import DeviceProfile
from cato_report.call_tpot import call_tpot
from cato_report.engine_speed import engine_speed
from cato_report.wait_prediction import wait_prediction

LATENCY_KEYS = ("ttft_p50", "ttft_p95", "e2e_p50", "e2e_p95")
TPOT_KEYS = ("tpot_p50", "tpot_p95")
GOAL = {"p50_rel": 0.10, "p95_rel": 0.15, "goodput_abs": 0.03}
TASK_COLUMNS = ["task_id", "task_type", "ttft_s", "e2e_s", "met", "status"]


class LostTasks(Exception):
    """A side's tasks.parquet does not hold every task of the trace exactly once."""

    def __init__(self, path: str, missing: list[str], repeated: list[str], extra: list[str]):
        self.path, self.missing, self.repeated, self.extra = path, missing, repeated, extra
        parts = [
            f"{what} {len(ids)} (e.g. {ids[:3]})"
            for what, ids in (("missing", missing), ("repeated", repeated), ("not in the trace", extra))
            if ids
        ]
        super().__init__(f"{path}: task_id: every task of the trace exactly once; " + ", ".join(parts))


def read_tasks(path: str | Path) -> pa.Table:
    with pq.ParquetFile(path) as f:
        return f.read(columns=TASK_COLUMNS)


def check_every_task_once(trace_ids: Iterable[str], tasks: str | Path) -> None:
    """Raise LostTasks unless ``tasks`` (a tasks.parquet) has each of ``trace_ids`` exactly once."""
    counts = Counter(read_tasks(tasks)["task_id"].to_pylist())
    want = [str(i) for i in trace_ids]
    wanted = set(want)
    missing = [i for i in want if i not in counts]
    repeated = sorted(i for i, n in counts.items() if n > 1)
    extra = sorted(str(i) for i in counts if i not in wanted)
    if missing or repeated or extra:
        raise LostTasks(str(tasks), missing, repeated, extra)


def percentile(values: np.ndarray, q: float) -> float | None:
    v = values[np.isfinite(values)]
    return float(np.percentile(v, q)) if v.size else None


def figures(tasks: pa.Table) -> dict:
    """P50/P95 TTFT and E2E, Goodput rate and tasks by status of one group of tasks."""
    out = {}
    for col in ("ttft", "e2e"):
        values = tasks[f"{col}_s"].to_numpy(zero_copy_only=False).astype(float)  # nulls become NaN
        for q in (50, 95):
            out[f"{col}_p{q}"] = percentile(values, q)
    met = pc.sum(pc.fill_null(tasks["met"], False).cast(pa.int64())).as_py() or 0  # a null met: not met
    out["goodput_rate"] = met / tasks.num_rows if tasks.num_rows else None
    out["status"] = dict(sorted(Counter(tasks["status"].to_pylist()).items()))
    return out


def by_task_type(tasks: pa.Table) -> dict[str, dict]:
    return {
        t: figures(tasks.filter(pc.equal(tasks["task_type"], t))) for t in sorted(set(tasks["task_type"].to_pylist()))
    }


def rel_err(sim: float | None, live: float | None) -> float | None:
    """sim / live - 1 (None where either is missing or live is 0)."""
    if sim is None or live is None or live == 0:
        return None
    return sim / live - 1


def abs_err(sim: float | None, live: float | None) -> float | None:
    return None if sim is None or live is None else sim - live


def goal_met(key: str, err: float | None) -> bool | None:
    if err is None:
        return None
    if key == "goodput_rate":
        return abs(err) <= GOAL["goodput_abs"]
    return abs(err) <= GOAL["p50_rel" if key.endswith("p50") else "p95_rel"]


def within_2x(err: float | None, spread: float | None) -> bool | None:
    """The simulator's error at most twice the live runs' spread (both as magnitudes)."""
    if err is None or spread is None:
        return None
    return abs(err) <= 2 * abs(spread)


def compare(sim: dict, live: dict, live2: dict | None = None) -> dict:
    """The rows of one group: each latency key and the Goodput rate, sim beside live."""
    rows = {}
    for key in (*LATENCY_KEYS, "goodput_rate"):
        measure = abs_err if key == "goodput_rate" else rel_err
        err_name = "abs_err" if key == "goodput_rate" else "rel_err"
        s, lv = sim.get(key), live.get(key)
        row = {"sim": s, "live": lv, err_name: measure(s, lv)}
        row["goal_met"] = goal_met(key, row[err_name])
        if live2 is not None:
            row["live2"] = live2.get(key)
            row["live_spread"] = measure(row["live2"], lv)
            row["within_2x_spread"] = within_2x(row[err_name], row["live_spread"])
        rows[key] = row
    rows["status"] = {"sim": sim.get("status", {}), "live": live.get("status", {})}
    if live2 is not None:
        rows["status"]["live2"] = live2.get("status", {})
    return rows


def compare_tpot(sim: dict, live: dict, live2: dict | None = None) -> dict:
    """The calls' TPOT rows of one group, sim beside live (and the live spread): figures to
    read beside the goal's rows, with no goal of their own."""
    rows = {"calls": {"sim": sim.get("calls", 0), "live": live.get("calls", 0)}}
    if live2 is not None:
        rows["calls"]["live2"] = live2.get("calls", 0)
    for key in TPOT_KEYS:
        row = {"sim": sim.get(key), "live": live.get(key), "rel_err": rel_err(sim.get(key), live.get(key))}
        if live2 is not None:
            row["live2"] = live2.get(key)
            row["live_spread"] = rel_err(row["live2"], row["live"])
        rows[key] = row
    return rows


def goals_met(rows: dict) -> tuple[int, int]:
    """(figures within the goal, figures with a goal) of ``rows``: a report, or its
    ``at_live_speed`` (each with ``overall`` and ``by_task_type``)."""
    met = [
        g[k]["goal_met"]
        for g in (rows["overall"], *rows["by_task_type"].values())
        for k in (*LATENCY_KEYS, "goodput_rate")
        if g[k]["goal_met"] is not None
    ]
    return sum(met), len(met)


def verdict(groups: Iterable[dict]) -> dict:
    """Whether every row that has both figures is within twice the live spread."""
    checked = [
        row["within_2x_spread"]
        for g in groups
        for key, row in g.items()
        if key != "status" and row.get("within_2x_spread") is not None
    ]
    return {
        "sim_within_2x_live_spread": bool(checked) and all(checked),
        "rows_checked": len(checked),
        "rows_within": sum(checked),
    }


def fidelity(
    sim: str | Path,
    live: str | Path,
    live2: str | Path | None = None,
    profiles: Mapping[str, DeviceProfile] | None = None,
    at_live_speed: str | Path | None = None,
) -> dict:
    """The fidelity report of run folders ``sim`` and ``live`` (and a second live run);
    ``engine_speed`` per side when given the ``profiles`` of the models; ``at_live_speed``:
    a simulated run whose engines ran at the live engine's speed, compared with live too."""
    dirs = {"sim": Path(sim), "live": Path(live)} | ({"live2": Path(live2)} if live2 is not None else {})
    if at_live_speed is not None:
        dirs["sim_at_live_speed"] = Path(at_live_speed)
    tables = {side: read_tasks(d / "tasks.parquet") for side, d in dirs.items()}
    overall = {side: figures(t) for side, t in tables.items()}
    types = {side: by_task_type(t) for side, t in tables.items()}
    names = sorted(set().union(*(types[side].keys() for side in ("sim", "live", "live2") if side in types)))

    def against_live(side: str, second_live: str | None = None) -> dict:
        """``side``'s rows against live, overall and per task type (and the live spread)."""
        return {
            "overall": compare(overall[side], overall["live"], overall.get(second_live)),
            "by_task_type": {
                name: compare(
                    types[side].get(name, {}),
                    types["live"].get(name, {}),
                    types[second_live].get(name, {}) if second_live in types else None,
                )
                for name in names
            },
        }

    report = {
        **against_live("sim", "live2"),
        "wait_prediction": {
            side: wait_prediction(dirs[side] / "nodes.parquet") for side in tables if side != "sim_at_live_speed"
        },
        "goal": dict(GOAL),
    }
    tpot = {side: call_tpot(dirs[side] / "nodes.parquet", t) for side, t in tables.items()}

    def calls_against_live(side: str, second_live: str | None = None) -> dict:
        """``side``'s calls' TPOT against live's, overall and per task type."""
        second = tpot.get(second_live) if second_live else None
        return {
            "overall": compare_tpot(tpot[side]["overall"], tpot["live"]["overall"], second and second["overall"]),
            "by_task_type": {
                name: compare_tpot(
                    tpot[side]["by_task_type"].get(name, {}),
                    tpot["live"]["by_task_type"].get(name, {}),
                    second["by_task_type"].get(name, {}) if second else None,
                )
                for name in names
            },
        }

    report["calls"] = calls_against_live("sim", "live2")
    if at_live_speed is not None:
        report["at_live_speed"] = against_live("sim_at_live_speed") | {"calls": calls_against_live("sim_at_live_speed")}
    if profiles is not None:
        report["engine_speed"] = {side: engine_speed(d / "nodes.parquet", profiles) for side, d in dirs.items()}
    if live2 is not None:
        report["verdict"] = verdict([report["overall"], *report["by_task_type"].values()])
    return report
