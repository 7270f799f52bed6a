"""``ray``: each replica a Ray actor that runs a vLLM server process on its node.

    provisioner:
      kind: ray
      address: null            # Ray to join: null = the one this process runs in (or a new
                               # local one), "auto", or "ray://host:10001"
      resources: {NPU: 1}      # what one replica holds: a custom accelerator resource
      num_cpus: 0              # logical CPUs one replica holds
      num_gpus: 0
      cpu_cores: []            # CPU build: bind each server's threads to one of these cores
      host: 127.0.0.1          # the server binds here; "node_ip" = its node's address
      python: ${CATO_VLLM_PYTHON}
      ready_timeout_s: 180
      max_replicas: null       # a limit the gateway's scaler sees (null: Ray's resources decide)
      env: {}
      models:
        tiny: {path: /models/tiny, args: [], max_model_len: 2048, env: {}}

Ray gives an actor holding ``NPU`` (or GPU) resources its devices through
ASCEND_RT_VISIBLE_DEVICES (CUDA_VISIBLE_DEVICES), so the server sees only them. The actor
is threaded (two calls at once), so a stop can end a server that is still starting.
``stop`` stops the server, then kills the actor. The nodes need this package and vLLM
installed (or the package on PYTHONPATH for a local Ray).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cato_core.errors import InputError
from cato_live.deploy import Deploy
from cato_live.provisioners.base import ReplicaHandle
from cato_live.provisioners.config import expand, provisioner_config
from cato_live.provisioners.process import ProcessModel


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = None
    resources: dict[str, float] = Field(default_factory=dict)
    num_cpus: float = Field(default=0, ge=0)
    num_gpus: float = Field(default=0, ge=0)
    cpu_cores: list[int] = Field(default_factory=list)
    host: str = "127.0.0.1"
    python: str = sys.executable
    ready_timeout_s: float = Field(default=180.0, gt=0)
    max_replicas: int | None = Field(default=None, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    models: dict[str, ProcessModel]


class VllmActor:
    """Runs on a Ray node: starts one vLLM server there, reports where it answers, stops it."""

    def __init__(self, kwargs: dict[str, Any], host: str):
        self.kwargs, self.host, self.server = kwargs, host, None

    def start(self, ready_timeout_s: float) -> dict:
        import ray

        from cato_live.provisioners.vllm_process import VllmServer

        node_ip = ray.util.get_node_ip_address()
        host = node_ip if self.host == "node_ip" else self.host
        self.server = VllmServer(**self.kwargs, host=host)
        self.server.start()
        self.server.wait_ready(timeout=ready_timeout_s)
        return {
            "url": self.server.url,
            "pid": self.server.pid,
            "node_ip": node_ip,
            "node_id": ray.get_runtime_context().get_node_id(),
            "log": str(self.server.log_path),
            "ready_seconds": self.server.ready_seconds,
        }

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


class RayProvisioner:
    kind = "ray"

    def __init__(self, deploy: Deploy):
        self.deploy = deploy
        c = self.config = provisioner_config(deploy, RayConfig)
        self.python = expand(c.python, deploy, "provisioner.python")
        self.paths = {m: expand(spec.path, deploy, f"provisioner.models.{m}.path") for m, spec in c.models.items()}
        if importlib.util.find_spec("ray") is None:
            raise InputError(
                deploy.source, "provisioner.kind", "'ray' needs the ray extra installed (pip install 'cato[ray]')"
            )
        self._actors: dict[str, Any] = {}
        self._cores: dict[str, int] = {}  # replica id -> CPU core it is bound to
        self._nodes: dict[str, int] = {}  # Ray node id -> machine index
        self._started_ray = False

    def _ray(self):
        import ray

        if not ray.is_initialized():
            ray.init(address=self.config.address, include_dashboard=False, log_to_driver=False)
            self._started_ray = True
        return ray

    def capacity(self, model: str) -> int | None:
        c = self.config
        caps = []
        if c.max_replicas is not None:
            caps.append(c.max_replicas - len(self._actors))
        if c.cpu_cores:
            caps.append(len(c.cpu_cores) - len(self._cores))
        return max(0, min(caps)) if caps else None

    async def start(self, model: str, replica_id: str) -> ReplicaHandle:
        ray = self._ray()
        c, spec, m = self.config, self.deploy.models[model], self.config.models[model]
        env = {**c.env, **m.env}
        if c.cpu_cores:
            free = [k for k in c.cpu_cores if k not in self._cores.values()]
            if not free:
                raise RuntimeError(f"no free CPU core for {replica_id} (cores {c.cpu_cores})")
            self._cores[replica_id] = free[0]
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(free[0])
        args = m.vllm_args(spec.max_num_seqs)
        kwargs = {
            "python": self.python,
            "model_dir": self.paths[model],
            "served_name": self.deploy.served_name(model),
            "extra_args": args,
            "env": env,
            "max_model_len": m.max_model_len,
            "priority_scheduling": spec.priority_scheduling,
        }
        actor = (
            ray.remote(VllmActor)
            .options(
                name=f"cato-{replica_id}",
                resources=dict(c.resources),
                num_cpus=c.num_cpus,
                num_gpus=c.num_gpus,
                max_concurrency=2,
                max_restarts=0,
            )
            .remote(kwargs, c.host)
        )
        self._actors[replica_id] = actor
        try:
            info = await actor.start.remote(c.ready_timeout_s)
        except BaseException:
            await self._stop(replica_id)
            raise
        machine = self._nodes.setdefault(info["node_id"], len(self._nodes))
        meta = {k: info[k] for k in ("pid", "node_ip", "node_id", "log", "ready_seconds")}
        meta["actor"] = f"cato-{replica_id}"
        return ReplicaHandle(replica_id, model, kwargs["served_name"], info["url"], machine, meta)

    async def _stop(self, replica_id: str) -> None:
        actor = self._actors.pop(replica_id, None)
        self._cores.pop(replica_id, None)
        if actor is None:
            return
        import ray

        try:
            await asyncio.wait_for(actor.stop.remote(), timeout=60)
        except Exception:  # noqa: BLE001  (the actor is dead already: nothing to stop through it)
            pass
        finally:
            ray.kill(actor, no_restart=True)

    async def stop(self, handle: ReplicaHandle) -> None:
        await self._stop(handle.replica_id)

    async def close(self) -> None:
        await asyncio.gather(*(self._stop(rid) for rid in list(self._actors)), return_exceptions=True)
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
