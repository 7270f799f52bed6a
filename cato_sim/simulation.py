"""One policy set-up run on one trace in a SimPy model of the cluster.

The simulation is a driver of the core: it brings time (SimPy) and the engines. Each task
is a cato_core TaskRun (its graph walked node by node, its records and row); each model a
cato_core ModelPool (routing, held calls, the scaler's inputs, the replica lifecycle). The
simulation releases tasks at their arrival times, runs tool nodes as timeouts and LLM nodes
on the engines, places replicas on machines (a new one is ready after its cold start), and
writes every task, node and replica to the result tables. It holds no module-level state:
runs are independent objects.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from cato_core.pool import ModelPool
from cato_core.profile import DeviceProfile, load_profile
from cato_core.profile_speed import slowed
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.results import NODES, REPLICAS, TASKS, TableWriter
from cato_core.routers import make_router
from cato_core.scalers import make_scaler
from cato_core.task_plan import NodePlan, compile_plans
from cato_core.task_run import TaskRun
from cato_sim.cluster import Cluster
from cato_sim.engine import Engine
from cato_sim.experiment import Experiment, Setup


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the run, back as it was after.

    A run allocates millions of short-lived objects, all freed by reference counting; the
    collector finds almost no cycles among them (909 objects in a 100,000-task run) but
    walks the young objects at every 700 allocations and, now and then, the whole heap:
    40% of the wall time of that run (bench/scale.py). Results do not depend on it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _standard_normals(rng: np.random.Generator, batch: int = 4096) -> Iterator[float]:
    """``rng``'s standard normals one at a time, drawn ``batch`` at a go: the same numbers
    as single draws (numpy fills an array draw by draw), without numpy's ~0.7 us per call."""
    while True:
        yield from rng.standard_normal(batch).tolist()


class _Replica:
    """The simulator's side of a replica: its engine and the machine it sits on."""

    __slots__ = ("state", "engine", "machine")

    def __init__(self, state: ReplicaState, engine: Engine, machine: int):
        self.state, self.engine, self.machine = state, engine, machine


class Simulation:
    def __init__(
        self,
        exp: Experiment,
        setup: Setup,
        trace: pd.DataFrame,
        out_dir: str | Path,
        seed: int,
        on_task_done=None,
    ):
        self.exp, self.setup, self.trace, self.seed = exp, setup, trace, seed
        self.out = Path(out_dir)
        self.on_task_done = on_task_done  # progress callback
        self.env = simpy.Environment()
        self.rng = np.random.default_rng(seed)
        self._normals = _standard_normals(self.rng)  # tool durations' draws
        self.router = make_router(setup.router, setup.router_params, seed=seed)
        self.cluster = Cluster(exp.cluster.machines, exp.cluster.accelerators_per_machine)
        self.profiles: dict[str, DeviceProfile] = {m: load_profile(s.profile) for m, s in exp.models.items()}
        # what the engines run at; the policies read self.profiles (ModelSpec.engine_slowdown)
        self.engine_profiles = {m: slowed(self.profiles[m], s.engine_slowdown) for m, s in exp.models.items()}
        self.pools = {
            m: ModelPool(
                m,
                self.profiles[m],
                spec.max_num_seqs,
                self.router,
                make_scaler(setup.scaler, setup.scaler_params),
                call_later=self._call_later,
                dispatch=self._dispatch,
                reject=self._reject,
                on_released=self._released,
                stop=self._stop,
            )
            for m, spec in exp.models.items()
        }
        self.plans = compile_plans(exp.task_types, exp.default_model)
        self.open: dict[str, TaskRun] = {}
        self.finished = 0
        self._replica_no = 0
        self._seq = 0
        self._all_done = self.env.event()
        self._total = len(trace)  # tasks to end (len of a DataFrame is a Python call)
        self.tasks = TableWriter(self.out / "tasks.parquet", TASKS)
        self.nodes = TableWriter(self.out / "nodes.parquet", NODES)
        self.replica_rows = TableWriter(self.out / "replicas.parquet", REPLICAS)

    # -- the run -----------------------------------------------------------------------
    def run(self) -> float:
        """Simulate to the last task (or the drain horizon); returns the simulated end time."""
        with _collector_paused():
            self.start()
            self.env.run(until=self.stop)
            return self.finish()

    def start(self) -> None:
        """Place the initial replicas and schedule arrivals and scaling; ``stop`` ends the run."""
        for model, spec in self.exp.models.items():
            for _ in range(spec.replicas):
                if not self._add_replica(model, warm=True):
                    break
            if self.pools[model].scaler.interval_s:
                self.env.process(self._scale_loop(model))
        self.env.process(self._arrivals())
        horizon = float(self.trace["arrival_s"].max()) + self.exp.drain_s
        self.stop = simpy.AnyOf(self.env, [self._all_done, self.env.timeout(horizon)])

    def finish(self) -> float:
        """Close the books at the current time: unfinished tasks time out; tables are written."""
        end = self.env.now
        self._close(end)
        return end

    def _arrivals(self):
        env = self.env
        t = self.trace
        sla = t["sla_s"].tolist() if "sla_s" in t else [None] * len(t)
        cols = zip(
            t["task_id"].tolist(),
            t["arrival_s"].tolist(),
            t["task_type"].tolist(),
            t["prompt_tokens"].tolist(),
            t["output_tokens"].tolist(),
            sla,
            strict=True,
        )
        for task_id, arrival, ttype, prompt, output, sla in cols:
            if arrival > env.now:
                yield env.timeout(arrival - env.now)
            run = TaskRun.from_profiles(task_id, self.plans[ttype], arrival, prompt, output, self.profiles, sla)
            self.open[task_id] = run
            for node in run.sources():
                self._start_node(run, node)

    def _start_node(self, run: TaskRun, node: NodePlan) -> None:
        now = self.env.now
        rec = run.start_node(node, now)
        if node.kind == "tool":
            dur = node.tool_s * math.exp(node.tool_sigma * next(self._normals)) if node.tool_sigma else node.tool_s
            ev = self.env.timeout(dur)
            ev.callbacks.append(lambda _e: self._node_done(run, node.index, self.env.now))
            return
        self._seq += 1
        r = LLMRequest(
            request_id=f"{run.task_id}/{node.name}",
            task_id=run.task_id,
            model=node.model,
            prompt_tokens=run.prompt_tokens,
            output_tokens=run.output_tokens,
            arrival_s=now,
            deadline_s=run.deadlines[node.index],
            ttft_only=node.ttft_only,
            seq=self._seq,
            record=rec,
            ref=(run, node.index),
        )
        self.pools[node.model].submit(r, now)

    # -- what the pools ask of the simulator -------------------------------------------
    def _call_later(self, delay_s: float, fn) -> None:
        ev = self.env.timeout(delay_s)
        ev.callbacks.append(lambda _e: fn(self.env.now))

    def _dispatch(self, k: ReplicaState, r: LLMRequest) -> None:
        k.driver.engine.notify()

    def _stop(self, k: ReplicaState, now: float) -> None:
        """Force-stop a replica still draining after its scaler's drain_timeout_s (Ray's
        graceful shutdown timeout): the calls it queues and runs fail, as when Ray kills it."""
        why = f"replica {k.id} was force-stopped while draining"
        for r in [k.queue.pop() for _ in range(len(k.queue))]:
            self._fail_node(r, now, why)
        k.driver.engine.abort(now, why)

    def _reject(self, r: LLMRequest) -> None:
        self._fail_node(r, self.env.now, f"no replica of model {r.model!r} is ready or starting")

    # -- engine events -----------------------------------------------------------------
    def on_start(self, r: LLMRequest, now: float) -> None:
        r.record.start_s = now

    def on_first_token(self, r: LLMRequest, now: float) -> None:
        r.record.first_token_s = now

    def on_finish(self, r: LLMRequest, now: float) -> None:
        self.pools[r.model].call_ended(r.replica, now)
        run, i = r.ref
        self._node_done(run, i, now)

    def on_fail(self, r: LLMRequest, now: float, why: str) -> None:
        self.pools[r.model].call_ended(r.replica, now)
        self._fail_node(r, now, why)

    def _fail_node(self, r: LLMRequest, now: float, why: str) -> None:
        run, i = r.ref
        rec = r.record
        rec.end_s, rec.status, rec.error = now, "failed", why
        self._end_task(run, now, "failed", f"node {run.plan.nodes[i].name}: {why}")

    def _node_done(self, run: TaskRun, i: int, now: float) -> None:
        for node in run.node_done(i, now):
            self._start_node(run, node)
        if run.finished and not run.done:
            self._end_task(run, now, "ok", None)

    def _end_task(self, run: TaskRun, now: float, status: str, error: str | None) -> None:
        row = run.end(now, status, error)
        if row is None:
            return
        del self.open[run.task_id]
        self.tasks.add(row)
        for node_row in run.node_rows():
            self.nodes.add(node_row)
        self.finished += 1
        if self.on_task_done:
            self.on_task_done()
        if self.finished == self._total:
            self._all_done.succeed()

    # -- replicas and scaling ----------------------------------------------------------
    def _add_replica(self, model: str, warm: bool) -> bool:
        profile, spec, pool = self.profiles[model], self.exp.models[model], self.pools[model]
        machine = self.cluster.place(profile.accelerators_per_replica)
        if machine is None:
            return False
        now = self.env.now
        self._replica_no += 1
        state = pool.new_replica(f"{model}-{self._replica_no}", now)
        engine = Engine(
            self.env,
            state,
            self.engine_profiles[model],
            self,
            max_num_seqs=spec.max_num_seqs,
            max_num_batched_tokens=spec.max_num_batched_tokens,
            chunked_prefill=spec.chunked_prefill,
            kv_capacity_tokens=spec.kv_capacity_tokens or profile.kv_capacity_tokens,
        )
        state.driver = _Replica(state, engine, machine)
        if warm:
            pool.mark_ready(state, now)
        else:
            ev = self.env.timeout(profile.cold_start_s)
            ev.callbacks.append(lambda _e: pool.mark_ready(state, self.env.now))
        return True

    def _scale_loop(self, model: str):
        pool, profile = self.pools[model], self.profiles[model]
        add = lambda: self._add_replica(model, warm=False)  # noqa: E731
        while True:
            yield self.env.timeout(pool.scaler.interval_s)
            pool.scale(self.env.now, self.cluster.room(profile.accelerators_per_replica), add)

    def _released(self, k: ReplicaState) -> None:
        replica = k.driver
        self.cluster.give_back(replica.machine, k.profile.accelerators_per_replica)
        self._write_replica(replica, k.released_s)

    def _write_replica(self, replica: _Replica, end: float) -> None:
        self.replica_rows.add(replica.state.row(replica.machine, replica.engine.busy_until_now(end), end))

    def _close(self, end: float) -> None:
        for run in list(self.open.values()):
            self._end_task(run, end, "timeout", f"not finished {self.exp.drain_s:g} s after the last arrival")
        for pool in self.pools.values():
            for k in pool.replicas:
                self._write_replica(k.driver, end)
        for w in (self.tasks, self.nodes, self.replica_rows):
            w.close()
