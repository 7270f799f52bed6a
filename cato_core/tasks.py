"""Coding task types as task graphs of LLM and tool nodes, with the metric their user feels.

The defaults are the project's reading of the paper (see PAPER.md, "Task types"); every field
can be overridden per experiment under ``task_types:``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Metric = Literal["ttft", "e2e"]


class ToolTime(BaseModel):
    """A tool node's duration: lognormal with this median (its baseline) and log-sigma."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    median_s: float = Field(gt=0)
    sigma: float = Field(default=0.25, ge=0)


class Node(BaseModel):
    """One node of a task graph. LLM nodes take the task's prompt/output token counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["llm", "tool"]
    after: tuple[str, ...] = ()
    model: str | None = None  # llm: which model serves it (None: the experiment's default)
    tool: ToolTime | None = None  # tool: how long it takes

    @model_validator(mode="after")
    def _check(self) -> Node:
        if self.kind == "tool" and self.tool is None:
            raise ValueError(f"tool node {self.name!r} needs 'tool: {{median_s: ...}}'")
        return self


class Sla(BaseModel):
    """An SLA on the task's metric: absolute seconds, or a multiple of its isolated baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seconds: float | None = Field(default=None, gt=0)
    multiple: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Sla:
        if (self.seconds is None) == (self.multiple is None):
            raise ValueError("give exactly one of 'seconds' or 'multiple'")
        return self

    def resolve(self, baseline_s: float) -> float:
        return self.seconds if self.seconds is not None else self.multiple * baseline_s


class TaskType(BaseModel):
    """A coding task type: its graph (in topological order), critical metric and SLA."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: Metric
    sla: Sla
    nodes: tuple[Node, ...]
    model: str | None = None  # model of its LLM nodes that name none (None: the default model)

    @model_validator(mode="after")
    def _graph(self) -> TaskType:
        seen: set[str] = set()
        for n in self.nodes:
            missing = [d for d in n.after if d not in seen]
            if missing:
                raise ValueError(f"node {n.name!r} runs after unknown or later node(s) {missing}")
            if n.name in seen:
                raise ValueError(f"node name {n.name!r} repeats")
            seen.add(n.name)
        if not any(n.kind == "llm" for n in self.nodes):
            raise ValueError("a task graph needs at least one llm node")
        return self

    def model_of(self, node: Node, default: str) -> str:
        return node.model or self.model or default

    @property
    def last_llm(self) -> str:
        """The LLM node streamed to the user: the task's TTFT is its first token."""
        return [n.name for n in self.nodes if n.kind == "llm"][-1]


def _tool(name: str, median_s: float, after: tuple[str, ...] = ()) -> Node:
    return Node(name=name, kind="tool", after=after, tool=ToolTime(median_s=median_s))


def default_task_types() -> dict[str, TaskType]:
    """The four coding task types of PAPER.md. SLA multiples and tool times are ours."""
    return {
        # Completion: fetch context from the repository, then a short answer; the user waits
        # for the first token in the editor, so TTFT is critical.
        "completion": TaskType(
            metric="ttft",
            sla=Sla(multiple=3.0),
            nodes=(_tool("retrieve", 0.05), Node(name="llm", kind="llm", after=("retrieve",))),
        ),
        "generation": TaskType(metric="ttft", sla=Sla(multiple=3.0), nodes=(Node(name="llm", kind="llm"),)),
        "summarization": TaskType(metric="e2e", sla=Sla(multiple=3.0), nodes=(Node(name="llm", kind="llm"),)),
        # Translation: the translated code is validated (compiled, tested) before it is shown.
        "translation": TaskType(
            metric="e2e",
            sla=Sla(multiple=3.0),
            nodes=(Node(name="llm", kind="llm"), _tool("validate", 0.5, after=("llm",))),
        ),
    }


def merge_task_types(raw, source: str) -> dict:
    """A config's ``task_types:`` merged field by field over the defaults (raw, unvalidated).

    A known type takes the fields given and keeps the rest; a new name is taken as given;
    ``name: null`` drops a type.
    """
    from cato_core.errors import InputError

    merged = {k: v.model_dump(exclude_none=True) for k, v in default_task_types().items()}
    if raw is None:
        return merged
    if not isinstance(raw, dict):
        raise InputError(source, "task_types", "a mapping of task type name to its fields")
    for name, fields in raw.items():
        if fields is None:
            merged.pop(name, None)
        elif name in merged and isinstance(fields, dict):
            merged[name] = {**merged[name], **fields}
        else:
            merged[name] = fields
    return merged
