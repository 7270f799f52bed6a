"""The summary table printed after a run: one column per set-up."""

from __future__ import annotations

from rich.table import Table


def _fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3g}"


def summary_table(summaries: dict[str, dict], title: str = "") -> Table:
    table = Table(title=title or None)
    table.add_column("metric")
    for name in summaries:
        table.add_column(name, justify="right")
    rows = [
        ("Goodput rate", "goodput_rate", True),
        ("utilization", "utilization", True),
        ("replica-seconds", "replica_seconds", False),
        ("TTFT p95 (s)", "ttft_p95", False),
        ("E2E p95 (s)", "e2e_p95", False),
    ]
    for label, key, pct in rows:
        table.add_row(label, *(_fmt(s.get(key), pct) for s in summaries.values()))
    types = sorted({t for s in summaries.values() for t in s["by_task_type"]})
    for t in types:
        table.add_section()
        for label, key, pct in (
            ("Goodput rate", "goodput_rate", True),
            ("TTFT p95 (s)", "ttft_p95", False),
            ("E2E p95 (s)", "e2e_p95", False),
        ):
            table.add_row(
                f"{t}: {label}", *(_fmt(s["by_task_type"].get(t, {}).get(key), pct) for s in summaries.values())
            )
    return table
