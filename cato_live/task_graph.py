"""Task types compiled for the gateway: node baselines, SLAs and deadlines (the Profiler's math).

- Baseline of a tool node: its duration (DEPLOY ``tools``, else the type's median); of an LLM
  node: the isolated prefill of the prompt, plus the isolated decode of the output unless it
  is the streamed (last) LLM node of a TTFT-critical type.
- SLA: the one the caller gives, else the type's (seconds, or a multiple of the critical path).
- A whole task (``/v1/tasks``): node deadline = arrival + slack budgets along the longest path.
- One call (``/v1/completions``, a node of a task the client runs): deadline = receipt + the
  node's own budget, since the nodes before it have had theirs (our choice; a client that
  knows better sends ``X-CATO-Deadline-Ms``).
"""

from __future__ import annotations

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
    model: str | None  # llm: the DEPLOY model serving it
    tool_s: float  # tool: how long the gateway sleeps for it
    after: tuple[int, ...]
    streamed: bool  # the last LLM node: its first token is the task's TTFT
    ttft_only: bool  # its deadline covers only the first token


class TypePlan:
    """One task type, compiled once: node indices, slack graph, which node is streamed."""

    def __init__(self, name: str, t: TaskType, default_model: str, tools: Mapping[str, float]):
        self.name, self.metric, self.sla = name, t.metric, t.sla
        index = {n.name: i for i, n in enumerate(t.nodes)}
        nodes = []
        for i, n in enumerate(t.nodes):
            streamed = n.name == t.last_llm
            nodes.append(NodePlan(
                i, n.name, n.kind,
                t.model_of(n, default_model) if n.kind == "llm" else None,
                tools.get(n.name, n.tool.median_s) if n.tool else 0.0,
                tuple(index[d] for d in n.after),
                streamed, streamed and t.metric == "ttft",
            ))
        self.nodes = tuple(nodes)
        self.graph = SlackGraph([n.after for n in self.nodes])
        self.streamed = index[t.last_llm]

    def baselines(self, profiles: Mapping[str, DeviceProfile], prompt: int, output: int) -> list[float]:
        out = []
        for n in self.nodes:
            if n.kind == "tool":
                out.append(n.tool_s)
                continue
            p = profiles[n.model]
            b = p.prefill_s(prompt)
            if not n.ttft_only:
                b += p.decode_s(prompt, output)
            out.append(b)
        return out

    def sla_s(self, baselines: list[float], given: float | None = None) -> float:
        return given if given is not None else self.sla.resolve(self.graph.critical_path(baselines))

    def node(self, name: str | None) -> NodePlan:
        """A node by name; None: the streamed LLM node. KeyError if there is no such LLM node."""
        if name is None:
            return self.nodes[self.streamed]
        for n in self.nodes:
            if n.name == name and n.kind == "llm":
                return n
        raise KeyError(name)

    def call_deadline(self, node: NodePlan, profiles: Mapping[str, DeviceProfile], prompt: int,
                      output: int, now: float, sla_s: float | None = None,
                      deadline_in_s: float | None = None) -> tuple[float, float]:
        """(deadline, SLA) of one call of ``node`` received at ``now``; see the module docstring."""
        b = self.baselines(profiles, prompt, output)
        sla = self.sla_s(b, sla_s)
        if deadline_in_s is not None:
            return now + deadline_in_s, sla
        return now + self.graph.budgets(b, sla)[node.index], sla


def compile_plans(task_types: Mapping[str, TaskType], default_model: str,
                  tools: Mapping[str, float]) -> dict[str, TypePlan]:
    return {name: TypePlan(name, t, default_model, tools) for name, t in task_types.items()}
