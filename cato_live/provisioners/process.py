"""``process``: vLLM servers as child processes of the gateway, each pinned to its devices.

    provisioner:
      kind: process
      python: ${CATO_VLLM_PYTHON}   # the Python with vLLM (default: the gateway's own)
      device: cpu                   # cpu | cuda | ascend
      devices: [0, 1]               # the pool: cores (cpu) or accelerator ids
      devices_per_replica: 1
      ready_timeout_s: 180
      log_dir: null                 # server logs (default: temporary files)
      env: {}                       # extra environment for every server
      models:
        tiny: {path: ${CATO_TINY_MODEL}, args: [], max_model_len: 2048, env: {}}

A replica takes ``devices_per_replica`` ids from the pool and sees only them:
CUDA_VISIBLE_DEVICES (cuda), ASCEND_RT_VISIBLE_DEVICES (ascend), or, for the CPU build,
those cores: its OpenMP threads bound to them (VLLM_CPU_OMP_THREADS_BIND) and the whole
server (API process, engine core) pinned to them, as a GPU replica has its device to itself. The server gets
``--max-num-seqs`` = the model's max_num_seqs and, with priority_scheduling,
``--scheduling-policy priority`` (a replica spanning devices needs ``--tensor-parallel-size``
in its ``args``). A server stops (SIGTERM to its process group, then SIGKILL: see
cato_live.provisioners.child_process) on release and on ``close``, which the gateway calls
on shutdown (SIGINT, SIGTERM); nothing stops it at interpreter exit.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cato_live.deploy import Deploy
from cato_live.provisioners.base import ReplicaHandle
from cato_live.provisioners.config import expand, provisioner_config
from cato_live.provisioners.vllm_process import VllmServer

DEVICE_ENV = {"cuda": "CUDA_VISIBLE_DEVICES", "ascend": "ASCEND_RT_VISIBLE_DEVICES", "cpu": "VLLM_CPU_OMP_THREADS_BIND"}


class ProcessModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # what vLLM's --model gets: a local folder (no model hub here)
    args: list[str] = Field(default_factory=list)  # more vLLM arguments
    max_model_len: int = Field(default=2048, ge=16)
    env: dict[str, str] = Field(default_factory=dict)

    def vllm_args(self, max_num_seqs: int) -> list[str]:
        """``args``, with vLLM's --max-num-seqs set to the gateway's slots unless given."""
        return self.args if "--max-num-seqs" in self.args else [*self.args, "--max-num-seqs", str(max_num_seqs)]


class ProcessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    python: str = sys.executable
    device: Literal["cpu", "cuda", "ascend"] = "cpu"
    devices: list[int] = Field(default_factory=lambda: [0], min_length=1)
    devices_per_replica: int = Field(default=1, ge=1)
    host: str = "127.0.0.1"
    ready_timeout_s: float = Field(default=180.0, gt=0)
    log_dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    models: dict[str, ProcessModel]

    @field_validator("devices")
    @classmethod
    def _unique(cls, devices: list[int]) -> list[int]:
        if len(set(devices)) != len(devices):
            raise ValueError("a device id repeats")
        return devices


class ProcessProvisioner:
    kind = "process"

    def __init__(self, deploy: Deploy):
        self.deploy = deploy
        c = self.config = provisioner_config(deploy, ProcessConfig)
        self.python = expand(c.python, deploy, "provisioner.python")
        self.paths = {m: expand(spec.path, deploy, f"provisioner.models.{m}.path") for m, spec in c.models.items()}
        self.log_dir = Path(expand(c.log_dir, deploy, "provisioner.log_dir")) if c.log_dir else None
        self._free = list(c.devices)
        self._servers: dict[str, tuple[VllmServer, list[int]]] = {}

    def capacity(self, model: str) -> int | None:
        return len(self._free) // self.config.devices_per_replica

    def _server(self, model: str, replica_id: str, devices: list[int]) -> VllmServer:
        c, spec, m = self.config, self.deploy.models[model], self.config.models[model]
        args = m.vllm_args(spec.max_num_seqs)
        env = {**c.env, **m.env, DEVICE_ENV[c.device]: ",".join(map(str, devices))}
        log = self.log_dir / f"{replica_id}.log" if self.log_dir else None
        return VllmServer(
            self.python,
            self.paths[model],
            None,
            self.deploy.served_name(model),
            extra_args=args,
            env=env,
            host=c.host,
            max_model_len=m.max_model_len,
            priority_scheduling=spec.priority_scheduling,
            log_path=log,
            cpus=devices if c.device == "cpu" else None,
        )

    async def start(self, model: str, replica_id: str) -> ReplicaHandle:
        n = self.config.devices_per_replica
        if len(self._free) < n:
            raise RuntimeError(
                f"no free {self.config.device} device for {replica_id} (pool {self.config.devices}, {n} per replica)"
            )
        devices, self._free = self._free[:n], self._free[n:]  # taken before any await
        server = self._server(model, replica_id, devices)
        self._servers[replica_id] = (server, devices)
        try:
            server.start()  # before any await: close() or a cancelled start finds the process
            await asyncio.to_thread(server.wait_ready, self.config.ready_timeout_s)
        except BaseException:
            await self._stop(replica_id)
            raise
        meta = {
            "pid": server.pid,
            "device": self.config.device,
            "devices": devices,
            "log": str(server.log_path),
            "ready_seconds": server.ready_seconds,
        }
        return ReplicaHandle(replica_id, model, server.served_name, server.url, 0, meta)

    async def _stop(self, replica_id: str) -> None:
        entry = self._servers.pop(replica_id, None)
        if entry is None:
            return
        server, devices = entry
        try:
            await asyncio.to_thread(server.stop)
        finally:
            self._free.extend(devices)

    async def stop(self, handle: ReplicaHandle) -> None:
        await self._stop(handle.replica_id)

    async def close(self) -> None:
        await asyncio.gather(*(self._stop(rid) for rid in list(self._servers)), return_exceptions=True)
