"""The gateway's state: its fleet of replicas, compiled task types and call records, and how
one call is made, recorded and ended. The HTTP side (cato_live.gateway.app) and the /v1/tasks
runner (cato_live.gateway.tasks_endpoint) both work on it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

from cato_core.request import LLMRequest
from cato_core.task_plan import NodePlan, compile_plans
from cato_live.deploy import Deploy
from cato_live.gateway.call_record import CallRecord
from cato_live.gateway.fleet import Fleet
from cato_live.gateway.live_pool import Call, LiveReplica
from cato_live.provisioners.base import Provisioner


class GatewayState:
    """The gateway's state: the fleet of replicas, compiled task types and call records."""

    def __init__(self, deploy: Deploy, provisioner: Provisioner, clock=time.monotonic):
        self.deploy = deploy
        self.fleet = Fleet(deploy, provisioner, clock)
        self.plans = compile_plans(deploy.task_types, deploy.default_model, deploy.tools)
        self.profiles = {m: deploy.profile(m) for m in deploy.models}
        self.records: deque[CallRecord] = deque(maxlen=deploy.records_kept)
        self._seq = itertools.count(1)
        self._auth = f"Bearer {deploy.token}".encode() if deploy.token else None

    async def start(self) -> None:
        await self.fleet.start()

    async def close(self) -> None:
        await self.fleet.close()

    def next_seq(self) -> int:
        return next(self._seq)

    def new_call(
        self,
        model: str,
        task_id: str | None,
        task_type: str,
        node: NodePlan,
        prompt_tokens: int,
        output_tokens: int,
        deadline_s: float,
        sla_s: float,
        body: dict,
        path: str,
        stream: bool,
        now: float | None = None,
    ) -> Call:
        """A call received at ``now`` (default: now), recorded from the start."""
        now = self.fleet.now() if now is None else now
        seq = self.next_seq()
        task_id = task_id or f"call-{seq}"
        rec = CallRecord(
            task_id,
            node.name,
            "llm",
            model,
            deadline_s,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            task_type=task_type,
            sla_s=sla_s,
            arrival_s=now,
            stream=stream,
        )
        self.records.append(rec)
        r = LLMRequest(
            f"{task_id}/{node.name}",
            task_id,
            model,
            prompt_tokens,
            output_tokens,
            now,
            deadline_s,
            ttft_only=node.ttft_only,
            seq=seq,
        )
        r.record = rec
        call = Call(r, body, path, stream, rec, now + self.deploy.models[model].request_timeout_s)
        r.ref = call
        return call

    def end_call(self, call: Call, rep: LiveReplica | None, status: str, error: str | None = None) -> None:
        rec = call.record
        rec.end_s, rec.status, rec.error = self.fleet.now(), status, error
        pool = self.fleet.pools[call.r.model]
        if rep is not None:
            pool.done(rep, call)
        if status == "ok":
            if rec.missed(call.r.ttft_only):
                self.fleet.metrics.violation(call.r.model, rec.task_type)
        elif status != "rejected":
            self.fleet.metrics.failure(call.r.model, status)
