"""One task run: its graph walked node by node, its node records and its tasks.parquet row.

Every driver runs a task the same way, through this one object; the driver supplies only
time and I/O (a SimPy timeout or an engine event, an HTTP call or an asyncio sleep):

    run = TaskRun.from_profiles(task_id, plan, arrival_s, prompt, output, profiles, given_sla_s)
    for node in run.sources():              # at arrival
        rec = run.start_node(node, now)     # then route it / send it / sleep, and fill rec
    ...
    for node in run.node_done(i, now):      # node i ended well: start what it unblocked
        run.start_node(node, now)
    if run.finished:
        row = run.end(now, "ok", None)      # the tasks.parquet row
    ...
    row = run.end(now, "failed", "node llm: HTTP 500: ...")   # or timeout / cancelled
    if row is not None:                     # None: the task had ended already
        write(row); write(*run.node_rows())

Definitions, written here once:
- TTFT: first token of the streamed (last LLM) node - arrival, whatever the status.
- E2E: the task's end - arrival, only if it is ``ok``.
- met: see ``met``; statuses: cato_core.results.STATUSES.
- A started node's status (NodeRecord.status) when its task ends, unless its driver set
  one: ``ok`` if it has an end time, else the task's status (cut short by it).
"""

from __future__ import annotations

from collections.abc import Mapping

from cato_core.node_record import NodeRecord
from cato_core.profile import DeviceProfile
from cato_core.task_plan import NodePlan, TaskPlan

# A task ends within its SLA at up to this much over it: node deadlines and the SLA are sums
# of float baselines and budgets, so a task that ends exactly on time in exact arithmetic
# may be an ulp or two late in floats.
MET_TOLERANCE_S = 1e-12

# The fields of TaskRun.end's row: cato_core.results.TASKS's names, in order (checked by the
# tests; the core's hot path does not import pyarrow for them).
TASK_FIELDS = ("task_id", "task_type", "metric", "arrival_s", "ttft_s", "e2e_s", "sla_s", "met", "status", "error")


def met(status: str, metric_s: float | None, sla_s: float) -> bool:
    """The task met its SLA: it ended ``ok`` and its critical metric (TTFT or E2E) is within it."""
    return status == "ok" and metric_s is not None and metric_s <= sla_s + MET_TOLERANCE_S


class TaskRun:
    """A task of a plan (task type) in flight: which nodes are done, their records, its end."""

    __slots__ = (
        "task_id",
        "plan",
        "arrival_s",
        "prompt_tokens",
        "output_tokens",
        "sla_s",
        "deadlines",
        "records",
        "_waiting",
        "_left",
        "finished",
        "done",
    )

    def __init__(
        self,
        task_id: str,
        plan: TaskPlan,
        arrival_s: float,
        prompt_tokens: int,
        output_tokens: int,
        sla_s: float,
        deadlines: list[float],
    ):
        self.task_id, self.plan, self.arrival_s = task_id, plan, arrival_s
        self.prompt_tokens, self.output_tokens = prompt_tokens, output_tokens
        self.sla_s, self.deadlines = sla_s, deadlines  # deadlines[i]: D_i of node i
        self.records: list[NodeRecord | None] = [None] * len(plan.nodes)  # None: not started
        self._waiting = list(plan.predecessors)  # unfinished predecessors, per node
        self._left = len(plan.nodes)  # nodes not done
        self.finished = False  # every node is done: end the task ok
        self.done = False  # ended (its row was made)

    @classmethod
    def from_profiles(
        cls,
        task_id: str,
        plan: TaskPlan,
        arrival_s: float,
        prompt_tokens: int,
        output_tokens: int,
        profiles: Mapping[str | None, DeviceProfile],
        given_sla_s: float | None = None,
        default: DeviceProfile | None = None,
    ) -> TaskRun:
        """A run with the Profiler's SLA (``given_sla_s``, or the type's) and node deadlines,
        from the baselines of ``profiles`` (per model; ``default`` for models not in it)."""
        base = plan.baselines(profiles, prompt_tokens, output_tokens, default)
        sla, deadlines = plan.sla_and_deadlines(base, arrival_s, given_sla_s)
        return cls(task_id, plan, arrival_s, prompt_tokens, output_tokens, sla, deadlines)

    # -- the walk ------------------------------------------------------------------------
    def sources(self) -> tuple[NodePlan, ...]:
        """The nodes to start at arrival (those that run after no other)."""
        return self.plan.source_nodes

    def start_node(self, node: NodePlan, now: float, record: NodeRecord | None = None) -> NodeRecord:
        """Record that ``node`` starts at ``now`` and return its record for the driver to fill.

        A new NodeRecord: queued at ``now`` (a tool node also starts then), with its kind,
        model and deadline, and the task's token counts for an LLM node. ``record``: the
        driver's own (e.g. a subclass with its fields), stored as given.
        """
        if record is None:
            # Positional: this runs for every node of every task the simulator runs.
            # (task_id, node, kind, model, deadline_s, queued_s, replica, priority, slack_s,
            #  predicted_wait_s, start_s, first_token_s, end_s, prompt_tokens, output_tokens)
            if node.kind == "tool":
                record = NodeRecord(self.task_id, node.name, "tool", None, self.deadlines[node.index], now,
                                    None, None, None, None, now)  # fmt: skip
            else:
                record = NodeRecord(self.task_id, node.name, "llm", node.model, self.deadlines[node.index], now,
                                    None, None, None, None, None, None, None,
                                    self.prompt_tokens, self.output_tokens)  # fmt: skip
        self.records[node.index] = record
        return record

    def node_done(self, index: int, now: float) -> list[NodePlan]:
        """Node ``index`` ended well at ``now``: the nodes that may start now (all their
        predecessors done). Once the task has ended: nothing, and nothing is recorded."""
        if self.done:
            return []
        rec = self.records[index]
        rec.end_s, rec.status = now, "ok"
        self._left -= 1
        self.finished = self._left == 0
        nodes, waiting = self.plan.nodes, self._waiting
        ready = []
        for j in nodes[index].successors:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(nodes[j])
        return ready

    # -- the books -----------------------------------------------------------------------
    def end(self, now: float, status: str, error: str | None) -> tuple | None:
        """End the task at ``now`` with ``status`` (cato_core.results.STATUSES): its tasks
        row (TASK_FIELDS). A task ends once: None if it had ended already.

        Its started nodes still running take their status now (see the module docstring).
        """
        if self.done:
            return None
        self.done = True
        arrival = self.arrival_s
        first = self.records[self.plan.streamed]
        ttft = first.first_token_s - arrival if first is not None and first.first_token_s is not None else None
        e2e = now - arrival if status == "ok" else None
        for rec in self.records:
            if rec is not None and rec.status == "running":
                rec.status = "ok" if rec.end_s is not None else status
        metric = self.plan.metric
        return (
            self.task_id,
            self.plan.name,
            metric,
            arrival,
            ttft,
            e2e,
            self.sla_s,
            met(status, ttft if metric == "ttft" else e2e, self.sla_s),
            status,
            error,
        )

    def node_rows(self) -> list[tuple]:
        """The nodes.parquet rows of every started node, in node order (after ``end``)."""
        row = NodeRecord.row  # the parquet tuple, also for a driver's subclass of NodeRecord
        return [row(rec) for rec in self.records if rec is not None]
