"""fidelity.md: the fidelity report (cato_report.fidelity) as tables a person reads."""

from __future__ import annotations

from cato_report.fidelity import GOAL, LATENCY_KEYS, goals_met
from cato_report.wait_prediction import WAIT_FLOOR_S

LABELS = {
    "ttft_p50": "TTFT P50",
    "ttft_p95": "TTFT P95",
    "e2e_p50": "E2E P50",
    "e2e_p95": "E2E P95",
    "goodput_rate": "Goodput",
}


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms" if x < 1 else f"{x:.3f} s"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _signed(x: float | None, points: bool) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f} pt" if points else f"{x * 100:+.1f}%"


def _yes(x: bool | None) -> str:
    return "-" if x is None else "yes" if x else "**no**"


def _goal(key: str) -> str:
    if key == "goodput_rate":
        return f"±{GOAL['goodput_abs'] * 100:g} pt"
    return f"±{GOAL['p50_rel' if key.endswith('p50') else 'p95_rel'] * 100:g}%"


def _rows(group: str, g: dict, repeat: bool) -> list[str]:
    out = []
    for key in (*LATENCY_KEYS, "goodput_rate"):
        row = g[key]
        points = key == "goodput_rate"
        fmt = _share if points else _seconds
        err = row["abs_err" if points else "rel_err"]
        cells = [group, LABELS[key], fmt(row["sim"]), fmt(row["live"]), _signed(err, points), _goal(key)]
        cells.append(_yes(row["goal_met"]))
        if repeat:
            cells += [fmt(row.get("live2")), _signed(row.get("live_spread"), points), _yes(row.get("within_2x_spread"))]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _tpot_rows(calls: dict, repeat: bool) -> list[str]:
    """The calls' TPOT table (cato_report.call_tpot), overall and per task type."""
    head = ["group", "calls", "TPOT P50 sim", "live", "sim vs live", "TPOT P95 sim", "live", "sim vs live"]
    if repeat:
        head.append("live2 vs live, P50 / P95")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, g in [("all", calls["overall"]), *calls["by_task_type"].items()]:
        p50, p95 = g["tpot_p50"], g["tpot_p95"]
        cells = [group, str(g["calls"]["live"])]
        for row in (p50, p95):
            cells += [_seconds(row["sim"]), _seconds(row["live"]), _signed(row["rel_err"], False)]
        if repeat:
            cells.append(f"{_signed(p50.get('live_spread'), False)} / {_signed(p95.get('live_spread'), False)}")
        out.append("| " + " | ".join(cells) + " |")
    return out


def _status(counts: dict) -> str:
    return ", ".join(f"{n} {s}" for s, n in counts.items()) or "-"


def fidelity_markdown(report: dict, inputs: dict) -> str:
    """The report as markdown: the goal, its inputs, one table row per figure, the calls' TPOT,
    wait prediction and engine speed."""
    repeat = "verdict" in report
    head = ["group", "figure", "sim", "live", "sim vs live", "goal", "goal met"]
    if repeat:
        head += ["live2", "live2 vs live", "within 2x spread"]
    lines = [
        "# Simulator fidelity",
        "",
        f"Goal: P50 within {GOAL['p50_rel'] * 100:g}%, P95 within {GOAL['p95_rel'] * 100:g}%, Goodput within "
        f"{GOAL['goodput_abs'] * 100:g} points (error = sim / live - 1; Goodput: sim - live).",
        "",
        *(f"- {k}: `{v}`" for k, v in inputs.items()),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += _rows("all", report["overall"], repeat)
    for name, g in report["by_task_type"].items():
        lines += _rows(name, g, repeat)
    met, checked = goals_met(report)
    lines += ["", f"Goal met on {met} of {checked} rows."]
    if repeat:
        v = report["verdict"]
        lines.append(
            f"Simulator error within twice the live-vs-live spread on {v['rows_within']} of {v['rows_checked']} "
            f"rows: {'yes' if v['sim_within_2x_live_spread'] else 'no'}."
        )
    if "calls" in report:
        lines += [
            "",
            "The LLM calls' time per output token (TPOT: (end - first token) / (output tokens - 1), calls of 2 or "
            "more tokens that ended ok): the engine's decode in the batch it ran in, apart from the queue. A figure "
            "to read beside the goal's, with no goal of its own.",
            "",
            *_tpot_rows(report["calls"], repeat),
        ]
    if "at_live_speed" in report:
        at = report["at_live_speed"]
        slowdown = report.get("engine_speed", {}).get("live", {}).get("decode_ratio")
        lines += [
            "",
            f"At the live engine's speed: the simulator again, its engines {_ratio(slowdown)} the profile's "
            "times (the live engine's decode, from its lone calls, below); routing, SLAs and deadlines from the "
            "profile. The error left is the model's; the difference from the table above, the machine's drift.",
            "",
            "| group | figure | sim at live speed | live | sim vs live | goal | goal met |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += _rows("all", at["overall"], False)
        for name, g in at["by_task_type"].items():
            lines += _rows(name, g, False)
        if "calls" in at:
            lines += ["", *_tpot_rows(at["calls"], False)]
    lines += ["", "Tasks by status:", ""]
    for side, counts in report["overall"]["status"].items():
        lines.append(f"- {side}: {_status(counts)}")
    lines += [
        "",
        "Router's wait prediction (LLM calls that ran; relative error against max(actual wait, "
        f"{WAIT_FLOOR_S * 1000:g} ms)):",
        "",
        "| run | calls | median abs error | median abs relative error |",
        "|---|---|---|---|",
    ]
    for side, w in report["wait_prediction"].items():
        lines.append(
            f"| {side} | {w['calls']} | {_seconds(w['median_abs_err_s'])} | {_share(w['median_abs_rel_err'])} |"
        )
    if "engine_speed" in report:
        lines += [
            "",
            "Engine speed against the profile (calls that ran alone on their replica, median of measured / "
            "the profile's isolated time; 1 = as profiled, 2 = twice as slow):",
            "",
            "| run | lone calls | time to first token | decode |",
            "|---|---|---|---|",
        ]
        for side, e in report["engine_speed"].items():
            lines.append(f"| {side} | {e['lone_calls']} | {_ratio(e['ttft_ratio'])} | {_ratio(e['decode_ratio'])} |")
    return "\n".join(lines) + "\n"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"x{x:.2f}"
