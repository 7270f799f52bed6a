"""The Profiler's math: node baselines, slack budgets along the longest path, node deadlines.

Budget of node i: B_i = SLA * b_i / L(i), where b_i is its isolated baseline and L(i) the
longest baseline path through i. On the critical path the budgets sum to the SLA exactly.
Deadline of node i: arrival + the largest sum of budgets over paths from a source to i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def longest_paths(
    baselines: Mapping[str, float], after: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """L(i): the longest baseline path through each node. ``baselines`` in topological order."""
    order = list(baselines)
    to_here: dict[str, float] = {}
    for n in order:
        to_here[n] = baselines[n] + max((to_here[d] for d in after.get(n, ())), default=0.0)
    successors: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for d in after.get(n, ()):
            successors[d].append(n)
    from_here: dict[str, float] = {}
    for n in reversed(order):
        from_here[n] = baselines[n] + max((from_here[s] for s in successors[n]), default=0.0)
    return {n: to_here[n] + from_here[n] - baselines[n] for n in order}


def budgets(
    baselines: Mapping[str, float], after: Mapping[str, Sequence[str]], sla_s: float
) -> dict[str, float]:
    """B_i = SLA * b_i / L(i) for each node (0 for a node whose path takes no time)."""
    through = longest_paths(baselines, after)
    return {n: (sla_s * b / through[n] if through[n] > 0 else 0.0) for n, b in baselines.items()}


def deadlines(
    baselines: Mapping[str, float],
    after: Mapping[str, Sequence[str]],
    sla_s: float,
    arrival_s: float = 0.0,
) -> dict[str, float]:
    """D_i = arrival + the largest sum of budgets over paths from a source to i, i included."""
    b = budgets(baselines, after, sla_s)
    reach: dict[str, float] = {}
    for n in baselines:
        reach[n] = b[n] + max((reach[d] for d in after.get(n, ())), default=0.0)
    return {n: arrival_s + r for n, r in reach.items()}
