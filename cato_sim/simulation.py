"""One policy set-up run on one trace in a SimPy model of the cluster.

The simulation is the driver: it releases tasks at their arrival times, walks each task's
graph, asks the core's router where every LLM call goes, carries out the core scaler's
decisions (a new replica is ready after its cold start), and records every task, node and
replica in the result tables. It holds no module-level state: runs are independent objects.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from cato_core.profile import DeviceProfile, load_profile
from cato_core.replica import ReplicaState
from cato_core.request import LLMRequest
from cato_core.results import NODES, REPLICAS, TASKS, TableWriter
from cato_core.routers import Retry, make_router
from cato_core.scalers import make_scaler
from cato_core.task_plan import NodePlan, TaskPlan, compile_plans
from cato_sim.cluster import Cluster
from cato_sim.engine import Engine
from cato_sim.experiment import Experiment, ModelSpec, Setup


class _Task:
    __slots__ = ("id", "plan", "arrival", "sla", "deadlines", "waiting", "left", "rec", "done",
                 "prompt", "output")

    def __init__(self, task_id, plan: TaskPlan, arrival, prompt, output):
        self.id, self.plan, self.arrival = task_id, plan, arrival
        self.prompt, self.output = prompt, output
        self.waiting = [len(n.after) for n in plan.nodes]  # unfinished predecessors
        self.left = len(plan.nodes)
        # per node: [replica, priority, slack, predicted wait, queued, start, first token, end]
        self.rec: list[list | None] = [None] * len(plan.nodes)
        self.done = False


class _Replica:
    def __init__(self, state: ReplicaState, engine: Engine, machine: int, spec: ModelSpec):
        self.state, self.engine, self.machine, self.spec = state, engine, machine, spec
        self.ready_s: float | None = None
        self.released_s: float | None = None
        self.requests = 0


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
        self.router = make_router(setup.router, setup.router_params, seed=seed)
        self.cluster = Cluster(exp.cluster.machines, exp.cluster.accelerators_per_machine)
        self.profiles: dict[str, DeviceProfile] = {m: load_profile(s.profile) for m, s in exp.models.items()}
        self.scalers = {m: make_scaler(setup.scaler, setup.scaler_params) for m in exp.models}
        self.replicas: dict[str, list[_Replica]] = {m: [] for m in exp.models}  # not released
        self._by_id: dict[str, _Replica] = {}  # every replica ever asked for, by id
        self.ready: dict[str, list[ReplicaState]] = {m: [] for m in exp.models}  # routable
        self.unrouted: dict[str, list[LLMRequest]] = {m: [] for m in exp.models}  # no replica ready
        self.pending = {m: 0 for m in exp.models}  # held by the router, retrying
        self.plans = compile_plans(exp.task_types, exp.default_model)
        self.open: dict[str, _Task] = {}
        self.finished = 0
        self._replica_no = 0
        self._seq = 0
        self._all_done = self.env.event()
        self.tasks = TableWriter(self.out / "tasks.parquet", TASKS)
        self.nodes = TableWriter(self.out / "nodes.parquet", NODES)
        self.replica_rows = TableWriter(self.out / "replicas.parquet", REPLICAS)
        self.events = 0

    # -- the run -----------------------------------------------------------------------
    def run(self) -> float:
        """Simulate to the last task (or the drain horizon); returns the simulated end time."""
        self.start()
        self.env.run(until=self.stop)
        return self.finish()

    def start(self) -> None:
        """Place the initial replicas and schedule arrivals and scaling; ``stop`` ends the run."""
        for model, spec in self.exp.models.items():
            for _ in range(spec.replicas):
                if not self._add_replica(model, warm=True):
                    break
            if self.scalers[model].interval_s:
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
        cols = zip(t["task_id"].tolist(), t["arrival_s"].tolist(), t["task_type"].tolist(),
                   t["prompt_tokens"].tolist(), t["output_tokens"].tolist(), sla)
        for task_id, arrival, ttype, prompt, output, sla in cols:
            if arrival > env.now:
                yield env.timeout(arrival - env.now)
            self._start_task(task_id, self.plans[ttype], arrival, prompt, output, sla)

    def _start_task(self, task_id, plan: TaskPlan, arrival, prompt, output, sla_given) -> None:
        task = _Task(task_id, plan, arrival, prompt, output)
        base = plan.baselines(self.profiles, prompt, output)
        task.sla, task.deadlines = plan.sla_and_deadlines(base, arrival, sla_given)
        self.open[task_id] = task
        for i in plan.sources:
            self._start_node(task, plan.nodes[i])

    def _start_node(self, task: _Task, node: NodePlan) -> None:
        now = self.env.now
        if node.kind == "tool":
            task.rec[node.index] = [None, None, None, None, now, now, None, None]
            dur = node.tool_s * math.exp(node.tool_sigma * self.rng.standard_normal()) if node.tool_sigma else node.tool_s
            ev = self.env.timeout(dur)
            ev.callbacks.append(lambda _e: self._node_done(task, node.index, self.env.now))
            return
        self._seq += 1
        r = LLMRequest(
            request_id=f"{task.id}/{node.name}", task_id=task.id, model=node.model,
            prompt_tokens=task.prompt, output_tokens=task.output, arrival_s=now,
            deadline_s=task.deadlines[node.index],
            ttft_only=node.ttft_only, seq=self._seq, ref=(task, node.index),
        )
        task.rec[node.index] = [None, None, None, None, now, None, None, None]
        self._route(r)

    def _route(self, r: LLMRequest) -> None:
        now = self.env.now
        ready = self.ready[r.model]
        if not ready:
            self.unrouted[r.model].append(r)
            return
        choice = self.router.route(r, ready, now)
        if isinstance(choice, Retry):
            self.pending[r.model] += 1
            ev = self.env.timeout(choice.delay_s)
            ev.callbacks.append(lambda _e: self._retry(r))
            return
        k, task_node = choice.replica, r.ref
        r.priority = choice.priority
        rec = task_node[0].rec[task_node[1]]
        wait = choice.wait_s if choice.wait_s is not None else k.wait_s(now)
        rec[0], rec[1], rec[2], rec[3] = k.id, choice.priority, r.deadline_s - now, wait
        self.scalers[r.model].on_routed(r, choice.priority, now)
        k.enqueue(r)
        k.driver.requests += 1
        k.driver.engine.notify()

    def _retry(self, r: LLMRequest) -> None:
        self.pending[r.model] -= 1
        self._route(r)

    # -- engine events -----------------------------------------------------------------
    def on_start(self, r: LLMRequest, now: float) -> None:
        task, i = r.ref
        task.rec[i][5] = now

    def on_first_token(self, r: LLMRequest, now: float) -> None:
        task, i = r.ref
        task.rec[i][6] = now

    def on_finish(self, r: LLMRequest, now: float) -> None:
        task, i = r.ref
        replica = self._by_id[task.rec[i][0]]
        if replica.state.state == "draining" and replica.state.ongoing == 0:
            self._finalize_replica(replica, now)
        self._node_done(task, i, now)

    def on_fail(self, r: LLMRequest, now: float, why: str) -> None:
        task, i = r.ref
        task.rec[i][7] = now
        self._end_task(task, now, "failed", f"node {task.plan.nodes[i].name}: {why}")

    def _node_done(self, task: _Task, i: int, now: float) -> None:
        if task.done:
            return
        task.rec[i][7] = now
        task.left -= 1
        nodes = task.plan.nodes
        for j in nodes[i].successors:
            task.waiting[j] -= 1
            if task.waiting[j] == 0:
                self._start_node(task, nodes[j])
        if task.left == 0:
            self._end_task(task, now, "ok", None)

    def _end_task(self, task: _Task, now: float, status: str, error: str | None) -> None:
        task.done = True
        del self.open[task.id]
        first = task.rec[task.plan.streamed]
        ttft = first[6] - task.arrival if first is not None and first[6] is not None else None
        e2e = now - task.arrival if status == "ok" else None
        metric = ttft if task.plan.metric == "ttft" else e2e
        met = status == "ok" and metric is not None and metric <= task.sla + 1e-12
        self.tasks.add((task.id, task.plan.name, task.plan.metric, task.arrival, ttft, e2e, task.sla, met, status, error))
        self._write_nodes(task, status)
        self.finished += 1
        if self.on_task_done:
            self.on_task_done()
        if self.finished == len(self.trace):
            self._all_done.succeed()

    def _write_nodes(self, task: _Task, task_status: str) -> None:
        for n, rec in zip(task.plan.nodes, task.rec):
            if rec is None:
                continue
            replica, prio, slk, pred, queued, start, first, end = rec
            wait = start - queued if start is not None else None
            status = "ok" if end is not None else task_status
            self.nodes.add((task.id, n.name, n.kind, n.model, replica, prio, slk, pred, wait,
                            task.deadlines[n.index], queued, start, first, end,
                            task.prompt if n.kind == "llm" else None,
                            task.output if n.kind == "llm" else None, status))

    # -- replicas and scaling ----------------------------------------------------------
    def _add_replica(self, model: str, warm: bool) -> bool:
        profile, spec = self.profiles[model], self.exp.models[model]
        machine = self.cluster.place(profile.accelerators_per_replica)
        if machine is None:
            return False
        now = self.env.now
        self._replica_no += 1
        state = ReplicaState(f"{model}-{self._replica_no}", model, profile, spec.max_num_seqs,
                             by_deadline=self.router.by_deadline, asked_s=now)
        engine = Engine(self.env, state, profile, self,
                        max_num_seqs=spec.max_num_seqs,
                        max_num_batched_tokens=spec.max_num_batched_tokens,
                        chunked_prefill=spec.chunked_prefill,
                        kv_capacity_tokens=spec.kv_capacity_tokens or profile.kv_capacity_tokens)
        replica = _Replica(state, engine, machine, spec)
        state.driver = replica
        self.replicas[model].append(replica)
        self._by_id[state.id] = replica
        if warm:
            self._make_ready(replica, now)
        else:
            ev = self.env.timeout(profile.cold_start_s)
            ev.callbacks.append(lambda _e: self._make_ready(replica, self.env.now))
        return True

    def _make_ready(self, replica: _Replica, now: float) -> None:
        if replica.state.state != "starting":
            return  # released while starting
        replica.ready_s = now
        replica.state.mark_ready(now)
        model = replica.state.model
        self.ready[model].append(replica.state)
        waiting, self.unrouted[model] = self.unrouted[model], []
        for r in waiting:
            self._route(r)

    def _scale_loop(self, model: str):
        scaler, profile = self.scalers[model], self.profiles[model]
        while True:
            yield self.env.timeout(scaler.interval_s)
            now = self.env.now
            states = [r.state for r in self.replicas[model]]
            decision = scaler.decide(now, states, self.cluster.room(profile.accelerators_per_replica), self.pending[model])
            for _ in range(decision.add):
                self._add_replica(model, warm=False)
            for state in decision.release:
                self._release(state.driver, now)

    def _release(self, replica: _Replica, now: float) -> None:
        state = replica.state
        if state.state == "ready":
            self.ready[state.model].remove(state)
        if state.state in ("starting", "ready"):
            state.state = "draining"
        if state.ongoing == 0:
            self._finalize_replica(replica, now)

    def _finalize_replica(self, replica: _Replica, now: float) -> None:
        state = replica.state
        state.state = "released"
        replica.released_s = now
        self.replicas[state.model].remove(replica)
        self.cluster.give_back(replica.machine, state.profile.accelerators_per_replica)
        self._write_replica(replica, now)

    def _write_replica(self, replica: _Replica, end: float) -> None:
        s = replica.state
        self.replica_rows.add((s.id, s.model, replica.machine, s.asked_s, replica.ready_s,
                               replica.released_s if replica.released_s is not None else end,
                               replica.engine.busy_until_now(end), replica.requests))

    def _close(self, end: float) -> None:
        for task in list(self.open.values()):
            self._end_task(task, end, "timeout", f"not finished {self.exp.drain_s:g} s after the last arrival")
        for model in self.replicas:
            for replica in self.replicas[model]:
                self._write_replica(replica, end)
        for w in (self.tasks, self.nodes, self.replica_rows):
            w.close()


