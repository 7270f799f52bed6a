"""Replay a trace against a live OpenAI-compatible endpoint (vLLM, a CATO gateway, the emulator).

Open loop: task i starts at ``arrival_s * time_scale`` seconds after the replay starts,
whatever happened to the tasks before it. A task walks its type's graph: a tool node is a
sleep (lognormal around its median, seeded per task), an LLM node one streamed
``/v1/completions`` request (cato_live.replay.client) whose prompt is a list of seeded random token
IDs of exactly ``prompt_tokens`` length, with ``max_tokens = output_tokens`` and
``ignore_eos``. Each LLM request carries the task type, task id and the node's deadline
(cato_live.headers); plain vLLM ignores these headers.

Measured at the client, on the replay's clock (seconds since the replay started):
task TTFT = first token of the last LLM node - arrival, task E2E = end of the last node -
arrival, node queued = request sent, first token, end. What the client cannot see is left
empty: nodes.start_s and wait_s (when the engine took the request), and predicted_wait_s.
replica and priority come from the gateway's X-CATO-Replica / X-CATO-Priority response
headers when it sends them (else: the target URL / empty). With the gateway in-process
(--deploy), its call records (GET /v1/cato/nodes) fill queued_s (routed), start_s (sent to
the replica), wait_s and predicted_wait_s, mapped onto the replay's clock (enrich_nodes).
replicas.parquet is the gateway's GET /v1/cato/replicas when it answers (its own clock;
only durations matter to the metrics), else one row for the target, busy while at least
one request was in flight at the client.

Every task ends in tasks.parquet exactly once: ok, failed (HTTP status and the error's
message, or the connection error), timeout (a request not complete within ``timeout_s``,
or a gateway's 504: its replica was too slow) or cancelled (the replay was stopped before
it finished, e.g. by Ctrl-C).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pandas as pd

from cato_core.profile import DeviceProfile
from cato_core.provenance import versions
from cato_core.results import NODES, REPLICAS, TASKS, TableWriter
from cato_core.task_plan import NodePlan, TaskPlan, compile_plans
from cato_core.task_run import TaskRun
from cato_core.tasks import TaskType
from cato_live.error_text import describe
from cato_live.headers import request_headers
from cato_live.replay.client import RequestFailed, stream_completion
from cato_live.task_walk import walk

MIN_TOKEN_ID = 10  # prompts avoid the lowest IDs, where tokenizers keep special tokens
GATEWAY_REPLICAS_PATH = "/v1/cato/replicas"
GATEWAY_NODES_PATH = "/v1/cato/nodes"


@dataclass(frozen=True)
class ReplayConfig:
    target: str  # base URL, no trailing /v1
    model: str | None  # None: leave "model" out of the request body
    profile: DeviceProfile  # baselines of every model's LLM nodes
    task_types: Mapping[str, TaskType]
    time_scale: float = 1.0
    seed: int = 0
    timeout_s: float = 300.0
    vocab_size: int = 2000
    connections: int = 1024
    profiles: Mapping[str, DeviceProfile] = field(default_factory=dict)  # per model, over ``profile``
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with every request (e.g. a token)


@dataclass
class ReplayResult:
    end_s: float  # the replay clock when the books were closed
    interrupted: bool
    by_status: dict[str, int]
    replicas_from: str  # "gateway" or "client"
    model: str | None  # the model requested (--model, or the first the target serves)


def tool_durations(plan: TaskPlan, rng: np.random.Generator) -> list[float]:
    """A task's tool-node durations, drawn in node order (0 for LLM nodes).

    Lognormal around the median as in the simulator: median * exp(sigma * N(0, 1)), one
    draw per tool node with sigma > 0. The simulator draws from one generator in event
    order; the replayer from one generator per task (seed, row), so a task's draws do not
    depend on how other tasks were timed.
    """
    out = []
    for n in plan.nodes:
        if n.kind != "tool":
            out.append(0.0)
        elif n.tool_sigma:
            out.append(n.tool_s * math.exp(n.tool_sigma * rng.standard_normal()))
        else:
            out.append(n.tool_s)
    return out


def prompt_ids(rng: np.random.Generator, n: int, vocab_size: int) -> list[int]:
    return rng.integers(MIN_TOKEN_ID, vocab_size, size=n).tolist()


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals: time with at least one request in flight."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


class Replayer:
    """One replay of one trace. ``run()`` once; the tables are in ``out_dir`` afterwards."""

    def __init__(
        self,
        trace: pd.DataFrame,
        cfg: ReplayConfig,
        out_dir: str | Path,
        on_task_done: Callable[[str], None] | None = None,
        gateway_now: Callable[[], float] | None = None,
    ):
        """``gateway_now``: the gateway's clock, when it runs in-process (fills released_s of
        replicas it has not released, as the run's end)."""
        self.trace, self.cfg, self.out = trace.reset_index(drop=True), cfg, Path(out_dir)
        self._cols = {
            c: self.trace[c].tolist()
            for c in ("task_id", "arrival_s", "task_type", "prompt_tokens", "output_tokens", "sla_s")
            if c in self.trace
        }
        self.on_task_done = on_task_done
        self.gateway_now = gateway_now
        self.model = cfg.model
        self.plans = compile_plans(cfg.task_types, cfg.model)
        self.url = cfg.target.rstrip("/") + "/v1/completions"
        self.tasks: dict[str, TaskRun] = {}
        self.running: dict[str, asyncio.Task] = {}
        self.inflight: list[tuple[float, float]] = []  # client-side [sent, end] of LLM requests
        self.requests = 0
        self.finished = 0
        self._tasks_started = False
        self._status_counts: dict[str, int] = {}
        self._stop = None
        self._stop_requested = False
        self._all_done = None
        self._t0 = 0.0
        self._loop = None
        self._tasks_w = self._nodes_w = None

    # -- clock -------------------------------------------------------------------------
    def now(self) -> float:
        return self._loop.time() - self._t0

    def stop(self) -> None:
        """Stop the replay (thread-unsafe; call from the loop, e.g. a signal handler).

        Before ``run()`` it makes run() write every task as cancelled at once."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    # -- the run -----------------------------------------------------------------------
    async def run(self) -> ReplayResult:
        self._loop = asyncio.get_running_loop()
        self._stop, self._all_done = asyncio.Event(), asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        self.out.mkdir(parents=True, exist_ok=True)
        self._tasks_w = TableWriter(self.out / "tasks.parquet", TASKS)
        self._nodes_w = TableWriter(self.out / "nodes.parquet", NODES)
        connector = aiohttp.TCPConnector(limit=self.cfg.connections, limit_per_host=0)
        # no total timeout here: stream_completion bounds each request by cfg.timeout_s itself
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, self.cfg.timeout_s))
        interrupted = False
        replicas_from = "client"
        try:
            async with aiohttp.ClientSession(
                connector=connector, timeout=timeout, headers=dict(self.cfg.headers), read_bufsize=1 << 20
            ) as client:
                served = [] if self._stop.is_set() else await self._warm_up(client)
                if self.model is None and served:
                    self.model = served[0]
                    self.plans = compile_plans(self.cfg.task_types, self.model)
                # What exists before the clock starts is left out of garbage collection for the
                # replay: a full collection over it pauses the client for tens of ms on 2 cores,
                # which shows up as TTFT.
                gc.collect()
                gc.freeze()
                self._t0 = self._loop.time()
                dispatcher = asyncio.create_task(self._dispatch(client))
                waiters = [asyncio.create_task(self._all_done.wait()), asyncio.create_task(self._stop.wait())]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    interrupted = not self._all_done.is_set()
                    pending = [dispatcher, *waiters, *self.running.values()]
                    for w in pending:
                        w.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    gc.unfreeze()
                end = self.now()
                self._close_open(end, "cancelled", "replay stopped before the task finished")
                rows = await self._gateway_replicas(client) if self._tasks_started else None
                records = await self._gateway_records(client) if self._tasks_started and self.gateway_now else None
        except BaseException:
            end = self.now() if self._t0 else 0.0
            self._close_open(end, "cancelled", "replay aborted before the task finished")
            self._close_writers([])
            raise
        if rows is not None:
            replicas_from = "gateway"
        else:
            rows = [self._client_replica_row(end)]
        self._close_writers(rows)
        if records:
            enrich_nodes(self.out / "nodes.parquet", *records)
        return ReplayResult(end, interrupted, dict(self._status_counts), replicas_from, self.model)

    def abandon(self, status: str, error: str) -> ReplayResult:
        """Write every task with ``status`` without sending anything (the target never came up)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._tasks_w = TableWriter(self.out / "tasks.parquet", TASKS)
        self._nodes_w = TableWriter(self.out / "nodes.parquet", NODES)
        self._close_open(0.0, status, error)
        self._close_writers([self._client_replica_row(0.0)])
        return ReplayResult(0.0, False, dict(self._status_counts), "client", self.model)

    def _close_writers(self, replica_rows: list[tuple]) -> None:
        w = TableWriter(self.out / "replicas.parquet", REPLICAS)
        for r in replica_rows:
            w.add(r)
        for writer in (self._tasks_w, self._nodes_w, w):
            writer.close()

    def _close_open(self, end: float, status: str, error: str) -> None:
        """Every task not yet in tasks.parquet goes there now, with ``status``."""
        for i, task_id in enumerate(self._cols["task_id"]):
            task = self.tasks.get(str(task_id))
            if task is None:
                task = self._make_task(i)
            self._end_task(task, end, status, error)

    async def _dispatch(self, client: aiohttp.ClientSession) -> None:
        scale = self.cfg.time_scale
        for i, arrival in enumerate(self._cols["arrival_s"]):
            delay = float(arrival) * scale - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            task = self._make_task(i)
            self._tasks_started = True
            self.running[task.task_id] = asyncio.create_task(self._run_task(client, task, i), name=task.task_id)

    def _make_task(self, i: int) -> TaskRun:
        c = self._cols
        task_id = str(c["task_id"][i])
        if task_id in self.tasks:
            return self.tasks[task_id]
        sla = c["sla_s"][i] if "sla_s" in c else None
        arrival = float(c["arrival_s"][i]) * self.cfg.time_scale
        task = TaskRun.from_profiles(
            task_id,
            self.plans[c["task_type"][i]],
            arrival,
            int(c["prompt_tokens"][i]),
            int(c["output_tokens"][i]),
            self.cfg.profiles,
            None if sla is None else float(sla),
            default=self.cfg.profile,
        )
        self.tasks[task_id] = task
        return task

    async def _run_task(self, client: aiohttp.ClientSession, task: TaskRun, i: int) -> None:
        """Task ``i`` of the trace, node by node (cato_live.task_walk), ended exactly once."""
        rng = np.random.default_rng([self.cfg.seed, i])
        tool_s = tool_durations(task.plan, rng)
        prompts = {
            n.index: prompt_ids(rng, task.prompt_tokens, self.cfg.vocab_size)
            for n in task.plan.nodes
            if n.kind == "llm"
        }
        try:
            end = await walk(task, lambda n: self._run_node(client, task, n, tool_s, prompts))
            self._end_task(task, end, "ok", None)
        except RequestFailed as e:
            self._end_task(task, self.now(), e.status, f"node {e.node}: {e.reason}")
        except asyncio.CancelledError:
            self._end_task(task, self.now(), "cancelled", "replay stopped before the task finished")
            raise
        except Exception as e:  # noqa: BLE001  (a bug must not lose the task)
            self._end_task(task, self.now(), "failed", f"replayer error: {describe(e)}")
        finally:
            self.running.pop(task.task_id, None)

    async def _run_node(
        self,
        client: aiohttp.ClientSession,
        task: TaskRun,
        node: NodePlan,
        tool_s: list[float],
        prompts: dict[int, list[int]],
    ) -> float:
        """One node, from its start to its end (returned): a sleep, or one streamed request."""
        rec = task.start_node(node, self.now())
        if node.kind == "tool":
            await asyncio.sleep(tool_s[node.index])
            return self.now()
        rec.prompt_tokens = rec.output_tokens = None  # measured at the client: the usage chunk's
        body = {"prompt": prompts[node.index], "max_tokens": task.output_tokens, "ignore_eos": True, "temperature": 0.0}
        if node.model is not None:
            body["model"] = node.model
        sent = self.now()
        rec.queued_s, rec.slack_s = sent, rec.deadline_s - sent
        headers = request_headers(task.plan.name, task.task_id, node.name, task.sla_s, rec.deadline_s, sent)
        self.requests += 1
        rec.replica = self.cfg.target
        try:
            res = await stream_completion(client, self.url, body, headers, self.now, self.cfg.timeout_s)
        except RequestFailed as e:
            e.node = node.name
            rec.replica = e.replica or rec.replica
            rec.priority, rec.first_token_s = e.priority, e.first_token_s
            self.inflight.append((sent, self.now()))
            raise
        except asyncio.CancelledError:
            self.inflight.append((sent, self.now()))
            raise
        self.inflight.append((sent, res.end_s))
        rec.replica = res.replica or rec.replica
        rec.priority, rec.first_token_s = res.priority, res.first_token_s
        rec.prompt_tokens, rec.output_tokens = res.prompt_tokens, res.output_tokens
        return res.end_s

    # -- books -------------------------------------------------------------------------
    def _end_task(self, task: TaskRun, now: float, status: str, error: str | None) -> None:
        row = task.end(now, status, error)
        if row is None:  # it had ended already
            return
        self._tasks_w.add(row)
        for r in task.node_rows():
            self._nodes_w.add(r)
        self._status_counts[status] = self._status_counts.get(status, 0) + 1
        self.finished += 1
        if self.on_task_done:
            self.on_task_done(status)
        if self.finished == len(self.trace) and self._all_done is not None:
            self._all_done.set()

    async def _warm_up(self, client: aiohttp.ClientSession) -> list[str]:
        """GET /v1/models before the clock starts: opens a pooled connection (the first task
        does not pay for it) and returns the served model names ([] if it does not answer)."""
        try:
            data = (await _get_json(client, self.cfg.target.rstrip("/") + "/v1/models", 5.0) or {}).get("data")
            return [str(m["id"]) for m in data] if isinstance(data, list) else []
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError, AttributeError):
            return []

    def _client_replica_row(self, end: float) -> tuple:
        return (self.cfg.target, self.model or "", 0, 0.0, 0.0, end, busy_seconds(self.inflight), self.requests)

    async def _gateway_records(self, client: aiohttp.ClientSession) -> tuple[list[dict], float] | None:
        """The in-process gateway's call records and its clock's offset to the replay's."""
        try:
            nodes = (await _get_json(client, self.cfg.target.rstrip("/") + GATEWAY_NODES_PATH, 10.0) or {}).get("nodes")
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            return None
        if not isinstance(nodes, list):
            return None
        return [n for n in nodes if isinstance(n, dict)], self.now() - self.gateway_now()

    async def _gateway_replicas(self, client: aiohttp.ClientSession) -> list[tuple] | None:
        """The gateway's replica table, if the target is a CATO gateway that serves one."""
        try:
            data = await _get_json(client, self.cfg.target.rstrip("/") + GATEWAY_REPLICAS_PATH, 5.0)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        items = data.get("replicas") if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            return None
        now = self.gateway_now() if self.gateway_now is not None else None
        rows = []
        for x in items:
            row = {name: x.get(name) for name in REPLICAS.names}
            if row["released_s"] is None:  # still running: provisioned to the run's end
                row["released_s"] = now
            rows.append(tuple(row.values()))
        return rows


async def _get_json(client: aiohttp.ClientSession, url: str, timeout_s: float):
    """GET ``url``'s JSON body; None unless it answers 200."""
    async with client.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        if resp.status != 200:
            return None
        return json.loads(await resp.read())


def enrich_nodes(path: Path, records: list[dict], offset_s: float) -> int:
    """Fill the LLM node rows of nodes.parquet with what the gateway saw of each call.

    ``records``: the gateway's call records (GET /v1/cato/nodes), times on its clock;
    ``offset_s``: replay clock - gateway clock. A matched row (same task id and node) takes
    the gateway's routing: queued_s (routed into a replica queue), start_s (taken from it
    and sent to the replica), wait_s and predicted_wait_s; slack_s becomes deadline - time
    at routing. (The router saw a slack larger by the request's transit time, as
    X-CATO-Deadline-Ms counts from sending.) Returns the number of rows filled.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_key = {(r.get("task_id"), r.get("node")): r for r in records if r.get("kind", "llm") == "llm"}
    df = pd.read_parquet(path)
    filled = 0
    for i in df.index[df["kind"] == "llm"]:
        rec = by_key.get((df.at[i, "task_id"], df.at[i, "node"]))
        if rec is None or rec.get("queued_s") is None:
            continue
        df.at[i, "queued_s"] = rec["queued_s"] + offset_s
        if rec.get("start_s") is not None:
            df.at[i, "start_s"] = rec["start_s"] + offset_s
            df.at[i, "wait_s"] = rec["start_s"] - rec["queued_s"]
        df.at[i, "predicted_wait_s"] = rec.get("predicted_wait_s")
        df.at[i, "slack_s"] = df.at[i, "deadline_s"] - df.at[i, "queued_s"]
        filled += 1
    pq.write_table(pa.Table.from_pandas(df, schema=NODES, preserve_index=False), path)
    return filled


# -- summary ---------------------------------------------------------------------------
VERSIONED = ("cato", "aiohttp", "numpy", "pandas", "pyarrow", "pydantic")


def write_summary(out: Path, args: dict, cfg: ReplayConfig, result: ReplayResult, wall_s: float) -> dict:
    """summary.json: resolved arguments, seed, versions, wall time and the summarize() figures
    of the tables just written (the same code as cato-sim's summaries)."""

    from cato_report.summary import summarize
    from cato_report.wait_prediction import wait_prediction

    tasks = pd.read_parquet(out / "tasks.parquet")
    replicas = pd.read_parquet(out / "replicas.parquet")
    acc = {m: p.accelerators_per_replica for m, p in cfg.profiles.items()}
    for m in replicas["model"].dropna().unique():
        acc.setdefault(m, cfg.profile.accelerators_per_replica)
    summary = {
        "run": "replay",
        "seed": cfg.seed,
        "versions": versions(VERSIONED),
        "wall_s": wall_s,
        "replayed_s": result.end_s,
        "interrupted": result.interrupted,
        "replicas_from": result.replicas_from,
        "config": {
            **args,
            "profile": dataclasses.asdict(cfg.profile),
            "task_types": {k: t.model_dump(mode="json") for k, t in cfg.task_types.items()},
        },
        **summarize(tasks, replicas, acc),
        "wait_prediction": wait_prediction(out / "nodes.parquet"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
