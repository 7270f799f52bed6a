"""What the replayer sends for each task: node baselines, SLA and node deadlines.

The same Profiler math as the simulator (cato_sim.simulation ``_start_task``), which
cato_live may not import, so it is written here over cato_core alone:

- baseline of a tool node: its median; of an LLM node: the isolated prefill of the task's
  prompt, plus the isolated decode of its output unless the node is the streamed (last) LLM
  node of a TTFT-critical task type;
- SLA: the trace's ``sla_s`` where given, else the type's SLA resolved against the critical
  path of those baselines;
- node deadline: arrival + slack budgets along the longest path (cato_core.slack).

A request tells the gateway its deadline as ``X-CATO-Deadline-Ms``: milliseconds from the
moment of sending to the node's deadline (negative once it has passed), so the gateway need
not share the replayer's clock. It also names the task type, task id, LLM node and the
task's SLA (X-CATO-Task, -Task-Id, -Node, -SLA-Ms), as cato_live.call_spec reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from cato_core.profile import DeviceProfile
from cato_core.slack import SlackGraph
from cato_core.tasks import TaskType

TASK_HEADER = "X-CATO-Task"
TASK_ID_HEADER = "X-CATO-Task-Id"
NODE_HEADER = "X-CATO-Node"
SLA_HEADER = "X-CATO-SLA-Ms"
DEADLINE_HEADER = "X-CATO-Deadline-Ms"


@dataclass(frozen=True, slots=True)
class NodePlan:
    index: int
    name: str
    kind: str  # llm | tool
    model: str | None
    tool_median_s: float
    tool_sigma: float
    after: tuple[int, ...]
    streamed: bool  # the last LLM node: its first token is the task's TTFT


class TypePlan:
    """A task type compiled once: node indices, slack graph, which node is streamed."""

    def __init__(self, name: str, t: TaskType, default_model: str | None):
        self.name, self.metric, self.sla = name, t.metric, t.sla
        index = {n.name: i for i, n in enumerate(t.nodes)}
        self.nodes = tuple(
            NodePlan(i, n.name, n.kind, (n.model or t.model or default_model) if n.kind == "llm" else None,
                     n.tool.median_s if n.tool else 0.0, n.tool.sigma if n.tool else 0.0,
                     tuple(index[d] for d in n.after), n.name == t.last_llm)
            for i, n in enumerate(t.nodes)
        )
        self.graph = SlackGraph([n.after for n in self.nodes])
        self.streamed = index[t.last_llm]

    def baselines(self, profiles: Mapping[str | None, DeviceProfile], default: DeviceProfile,
                  prompt: int, output: int) -> list[float]:
        out = []
        for n in self.nodes:
            if n.kind == "tool":
                out.append(n.tool_median_s)
                continue
            p = profiles.get(n.model, default)
            b = p.prefill_s(prompt)
            if not (n.streamed and self.metric == "ttft"):
                b += p.decode_s(prompt, output)
            out.append(b)
        return out

    def sla_and_deadlines(self, baselines: list[float], arrival_s: float,
                          sla_override: float | None) -> tuple[float, list[float]]:
        if sla_override is None or (isinstance(sla_override, float) and math.isnan(sla_override)):
            sla = self.sla.resolve(self.graph.critical_path(baselines))
        else:
            sla = float(sla_override)
        return sla, self.graph.deadlines(baselines, sla, arrival_s)


def compile_types(task_types: Mapping[str, TaskType], default_model: str | None) -> dict[str, TypePlan]:
    return {name: TypePlan(name, t, default_model) for name, t in task_types.items()}


def deadline_ms(deadline_s: float, now_s: float) -> str:
    """The X-CATO-Deadline-Ms value: ms from now to the deadline, to the microsecond."""
    return f"{(deadline_s - now_s) * 1000.0:.3f}"


def request_headers(task_type: str, task_id: str, node: str, sla_s: float, deadline_s: float,
                    now_s: float) -> dict[str, str]:
    return {TASK_HEADER: task_type, TASK_ID_HEADER: task_id, NODE_HEADER: node,
            SLA_HEADER: f"{sla_s * 1000.0:.3f}", DEADLINE_HEADER: deadline_ms(deadline_s, now_s)}
