"""A task type compiled once for a driver's hot path, with the Profiler's math per task.

- Baseline of a tool node: its duration (a driver may configure it; else the type's
  median); of an LLM node: the isolated prefill of the prompt, plus the isolated decode of
  the output unless it is the streamed (last) LLM node of a TTFT-critical type.
- SLA: the one given for the task, else the type's (seconds, or a multiple of the critical
  path of baselines).
- Node deadlines: arrival + slack budgets along the longest path (cato_core.slack).
- One call received on its own (a node of a task the client runs): deadline = receipt + the
  node's own budget, since the nodes before it have had theirs (our choice; a client that
  knows better gives the deadline itself).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from cato_core.profile import DeviceProfile
from cato_core.slack import SlackGraph
from cato_core.tasks import TaskType


@dataclass(frozen=True, slots=True)
class NodePlan:
    index: int
    name: str
    kind: str  # llm | tool
    model: str | None  # llm: the model serving it
    tool_s: float  # tool: its duration (median)
    tool_sigma: float  # tool: log-sigma of its lognormal duration
    after: tuple[int, ...]
    successors: tuple[int, ...]
    streamed: bool  # the last LLM node: its first token is the task's TTFT
    ttft_only: bool  # its deadline covers only the first token


class TaskPlan:
    """One task type: node indices, slack graph, sources, which node is streamed."""

    def __init__(
        self, name: str, t: TaskType, default_model: str | None, tool_times: Mapping[str, float] | None = None
    ):
        self.name, self.metric, self.sla = name, t.metric, t.sla
        tool_times = tool_times or {}
        index = {n.name: i for i, n in enumerate(t.nodes)}
        succ: list[list[int]] = [[] for _ in t.nodes]
        for i, n in enumerate(t.nodes):
            for d in n.after:
                succ[index[d]].append(i)
        nodes = []
        for i, n in enumerate(t.nodes):
            streamed = n.name == t.last_llm
            nodes.append(
                NodePlan(
                    i,
                    n.name,
                    n.kind,
                    t.model_of(n, default_model) if n.kind == "llm" else None,
                    tool_times.get(n.name, n.tool.median_s) if n.tool else 0.0,
                    n.tool.sigma if n.tool else 0.0,
                    tuple(index[d] for d in n.after),
                    tuple(succ[i]),
                    streamed,
                    streamed and t.metric == "ttft",
                )
            )
        self.nodes = tuple(nodes)
        self.graph = SlackGraph([n.after for n in self.nodes])
        self.sources = tuple(n.index for n in self.nodes if not n.after)
        self.source_nodes = tuple(self.nodes[i] for i in self.sources)
        self.predecessors = tuple(len(n.after) for n in self.nodes)  # a task run's countdown
        self.streamed = index[t.last_llm]

    def baselines(
        self,
        profiles: Mapping[str | None, DeviceProfile],
        prompt: int,
        output: int,
        default: DeviceProfile | None = None,
    ) -> list[float]:
        """b_i of every node for a task of these token counts (``default``: for unknown models)."""
        out = []
        for n in self.nodes:
            if n.kind == "tool":
                out.append(n.tool_s)
                continue
            p = profiles[n.model] if default is None else profiles.get(n.model, default)
            b = p.prefill_s(prompt)
            if not n.ttft_only:
                b += p.decode_s(prompt, output)
            out.append(b)
        return out

    def sla_s(self, baselines: list[float], given: float | None = None) -> float:
        """The task's SLA: ``given`` (a number, not NaN) or the type's."""
        if given is None or (isinstance(given, float) and math.isnan(given)):
            return self.sla.resolve(self.graph.critical_path(baselines))
        return float(given)

    def sla_and_deadlines(
        self, baselines: list[float], arrival_s: float, given_sla_s: float | None = None
    ) -> tuple[float, list[float]]:
        """The task's SLA and its node deadlines D_i."""
        sla = self.sla_s(baselines, given_sla_s)
        return sla, self.graph.deadlines(baselines, sla, arrival_s)

    def node(self, name: str | None) -> NodePlan:
        """An LLM node by name; None: the streamed one. KeyError if there is no such LLM node."""
        if name is None:
            return self.nodes[self.streamed]
        for n in self.nodes:
            if n.name == name and n.kind == "llm":
                return n
        raise KeyError(name)

    def call_deadline(
        self,
        node: NodePlan,
        profiles: Mapping[str, DeviceProfile],
        prompt: int,
        output: int,
        now: float,
        sla_s: float | None = None,
        deadline_in_s: float | None = None,
    ) -> tuple[float, float]:
        """(deadline, SLA) of one call of ``node`` received at ``now``; see the module docstring."""
        b = self.baselines(profiles, prompt, output)
        sla = self.sla_s(b, sla_s)
        if deadline_in_s is not None:
            return now + deadline_in_s, sla
        return now + self.graph.budgets(b, sla)[node.index], sla


def compile_plans(
    task_types: Mapping[str, TaskType], default_model: str | None, tool_times: Mapping[str, float] | None = None
) -> dict[str, TaskPlan]:
    return {name: TaskPlan(name, t, default_model, tool_times) for name, t in task_types.items()}
