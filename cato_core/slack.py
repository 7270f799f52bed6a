"""The Profiler's math: node baselines, slack budgets along the longest path, node deadlines.

Budget of node i: B_i = SLA * b_i / L(i), where b_i is its isolated baseline and L(i) the
longest baseline path through i. On the critical path the budgets sum to the SLA exactly.
Deadline of node i: arrival + the largest sum of budgets over paths from a source to i.

A task type's graph is compiled once into a SlackGraph (node indices, topological order);
the simulator then computes every task's deadlines with plain list arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class SlackGraph:
    """The shape of a task graph: ``after[i]`` lists the nodes i runs after (all < i)."""

    def __init__(self, after: Sequence[Sequence[int]]):
        self.after = tuple(tuple(a) for a in after)
        n = len(self.after)
        succ: list[list[int]] = [[] for _ in range(n)]
        for i, preds in enumerate(self.after):
            for d in preds:
                if not 0 <= d < i:
                    raise ValueError(f"node {i} runs after {d}: nodes must be in topological order")
                succ[d].append(i)
        self.successors = tuple(tuple(s) for s in succ)
        # A simple chain (the common case) needs no path search: L(i) is the total for all i.
        self.chain = all(a == ((i - 1,) if i else ()) for i, a in enumerate(self.after))

    def longest_through(self, b: Sequence[float]) -> list[float]:
        """L(i) for every node."""
        if self.chain:
            return [sum(b)] * len(b)
        to_here: list[float] = []
        for i, preds in enumerate(self.after):
            to_here.append(b[i] + max((to_here[d] for d in preds), default=0.0))
        from_here = [0.0] * len(b)
        for i in range(len(b) - 1, -1, -1):
            from_here[i] = b[i] + max((from_here[s] for s in self.successors[i]), default=0.0)
        return [t + f - x for t, f, x in zip(to_here, from_here, b, strict=True)]

    def critical_path(self, b: Sequence[float]) -> float:
        """The longest baseline path of the whole graph: the task's isolated latency."""
        return max(self.longest_through(b))

    def budgets(self, b: Sequence[float], sla_s: float) -> list[float]:
        through = self.longest_through(b)
        return [sla_s * x / t if t > 0 else 0.0 for x, t in zip(b, through, strict=True)]

    def deadlines(self, b: Sequence[float], sla_s: float, arrival_s: float = 0.0) -> list[float]:
        if self.chain:
            # budgets() and the walk below, for a chain (the simulator asks this for every
            # task): every L(i) is the total, and each node is reached after the one before.
            total, reach, out = sum(b), 0.0, []
            for x in b:
                reach += sla_s * x / total if total > 0 else 0.0
                out.append(arrival_s + reach)
            return out
        budget = self.budgets(b, sla_s)
        reach: list[float] = []
        for i, preds in enumerate(self.after):
            reach.append(budget[i] + max((reach[d] for d in preds), default=0.0))
        return [arrival_s + r for r in reach]


def _compile(baselines: Mapping[str, float], after: Mapping[str, Sequence[str]]):
    names = list(baselines)
    index = {n: i for i, n in enumerate(names)}
    graph = SlackGraph([[index[d] for d in after.get(n, ())] for n in names])
    return names, graph, [baselines[n] for n in names]


def longest_paths(baselines: Mapping[str, float], after: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """L(i) by node name; ``baselines`` in topological order."""
    names, g, b = _compile(baselines, after)
    return dict(zip(names, g.longest_through(b), strict=True))


def budgets(baselines: Mapping[str, float], after: Mapping[str, Sequence[str]], sla_s: float) -> dict[str, float]:
    """B_i = SLA * b_i / L(i) by node name (0 for a node whose path takes no time)."""
    names, g, b = _compile(baselines, after)
    return dict(zip(names, g.budgets(b, sla_s), strict=True))


def deadlines(
    baselines: Mapping[str, float], after: Mapping[str, Sequence[str]], sla_s: float, arrival_s: float = 0.0
) -> dict[str, float]:
    """D_i = arrival + the largest sum of budgets over paths from a source to i, i included."""
    names, g, b = _compile(baselines, after)
    return dict(zip(names, g.deadlines(b, sla_s, arrival_s), strict=True))
