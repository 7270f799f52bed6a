"""A task's graph run on asyncio, for the replayer and the gateway's /v1/tasks.

The core's TaskRun decides what starts when; this runs each started node as an asyncio
task: the sources at once, then, as each node's coroutine returns, the nodes it unblocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cato_core.task_plan import NodePlan
from cato_core.task_run import TaskRun


async def walk(run: TaskRun, run_node: Callable[[NodePlan], Awaitable[float]]) -> float | None:
    """Run every node of ``run`` once its predecessors are done; the end of the last node.

    ``run_node(node)`` starts the node's record (``run.start_node``), runs it and returns
    its end time, which goes to ``run.node_done``. The first node to raise ends the walk with
    its exception, as does a cancellation; either way the nodes still running are cancelled
    and awaited first. The task itself is left for the caller to end.
    """
    running: dict[asyncio.Task, int] = {}
    last: float | None = None

    def start(nodes: list[NodePlan]) -> None:
        for n in nodes:
            running[asyncio.create_task(run_node(n), name=f"{run.task_id}/{n.name}")] = n.index

    try:
        start(run.sources())
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                i = running.pop(t)
                end = t.result()  # a failed node raises here
                last = end if last is None else max(last, end)
                start(run.node_done(i, end))
    finally:
        for t in running:
            t.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    return last
