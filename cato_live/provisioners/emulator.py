"""The ``emulator`` provisioner: each replica a ``python -m cato_emulator`` subprocess.

DEPLOY.yaml::

    provisioner:
      kind: emulator
      time_scale: 1.0            # multiplies every emulated duration
      max_num_batched_tokens: 2048
      chunked_prefill: true
      kv_capacity_tokens: null   # null: the profile's
      max_model_len: null
      max_replicas: null         # over all models; null: no limit
      ready_timeout_s: 60
      log_dir: null              # null: the system's temp folder
      python: null               # null: this Python

Each model's profile (DEPLOY's ``models.<name>.profile``) is written to a YAML file the
child reads; ``max_num_seqs`` becomes the emulator's ``--max-num-seqs`` and the served
name DEPLOY's ``served_model`` (default: the model key).

For machines with no accelerator: the emulator is a vLLM-compatible server timed by the
simulator's engine model and a device profile (see cato_emulator/). It runs as a child
process, so cato_live imports neither cato_emulator nor cato_sim. ``start`` picks a free
port, spawns the process in its own process group (cato_live.provisioners.child_process;
its log in ``log_dir``) and returns once GET /v1/models lists the served name; the time
that takes is the replica's real cold start (about a second: Python start-up and imports),
not the profile's ``cold_start_s``. ``stop`` and ``close`` stop the process group (SIGTERM,
then SIGKILL after ``STOP_GRACE_S``); nothing else does, so the owner closes the provisioner.

Per model (DEPLOY.yaml's models key), an :class:`EmulatorSpec`: the profile and engine
limits. The served name defaults to the model key, so requests need no renaming.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cato_core.errors import InputError
from cato_core.profile import DeviceProfile, save_profile
from cato_live.provisioners.base import ReplicaHandle
from cato_live.provisioners.child_process import ChildProcess, ChildStartError, free_port, lists_model

STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long


class EmulatorStartError(RuntimeError):
    """No replica of that model can start here (no spec, already running, no room)."""


class EmulatorOptions(BaseModel):
    """The emulator provisioner's own fields under DEPLOY.yaml's ``provisioner``."""

    model_config = ConfigDict(extra="forbid")
    time_scale: float = Field(default=1.0, gt=0)
    max_num_batched_tokens: int = Field(default=2048, ge=1)
    chunked_prefill: bool = True
    kv_capacity_tokens: int | None = Field(default=None, ge=1)
    max_model_len: int | None = Field(default=None, ge=2)
    max_replicas: int | None = Field(default=None, ge=0)
    host: str = "127.0.0.1"
    python: str | None = None
    ready_timeout_s: float = Field(default=60.0, gt=0)
    log_dir: str | None = None


@dataclass(frozen=True)
class EmulatorSpec:
    profile: str | DeviceProfile  # a shipped profile name, a profile YAML path, or the profile
    served_model_name: str | None = None  # None: the model key
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    chunked_prefill: bool = True
    kv_capacity_tokens: int | None = None
    max_model_len: int | None = None
    time_scale: float = 1.0
    extra_args: tuple[str, ...] = ()

    def command(self, python: str, host: str, port: int, served: str, profile_ref: str) -> list[str]:
        cmd = [
            python,
            "-m",
            "cato_emulator",
            "--profile",
            profile_ref,
            "--host",
            host,
            "--port",
            str(port),
            "--served-model-name",
            served,
            "--max-num-seqs",
            str(self.max_num_seqs),
            "--max-num-batched-tokens",
            str(self.max_num_batched_tokens),
            "--time-scale",
            repr(self.time_scale),
        ]
        if not self.chunked_prefill:
            cmd.append("--no-chunked-prefill")
        if self.kv_capacity_tokens is not None:
            cmd += ["--kv-capacity-tokens", str(self.kv_capacity_tokens)]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        return cmd + list(self.extra_args)


def _project_root() -> Path | None:
    """The folder holding cato_emulator when running from a source tree (None if installed)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "cato_emulator" / "__main__.py").is_file() else None


class EmulatorProvisioner:
    """Starts and stops emulated replicas; implements cato_live.provisioners.base.Provisioner."""

    kind = "emulator"

    def __init__(
        self,
        deploy: Any = None,
        *,
        models: Mapping[str, EmulatorSpec | Mapping] | None = None,
        options: Mapping[str, Any] | EmulatorOptions | None = None,
        env: Mapping[str, str] | None = None,
    ):
        """From a checked Deploy (as cato_live.provisioners.registry does), or from ``models``
        (model -> EmulatorSpec) and ``options`` (EmulatorOptions fields) directly."""
        if deploy is not None:
            try:
                opts = EmulatorOptions.model_validate(deploy.provisioner.options())
            except ValidationError as e:
                err = e.errors()[0]
                field = "provisioner." + ".".join(str(x) for x in err["loc"])
                raise InputError(deploy.source, field, err["msg"]) from None
            models = {
                m: EmulatorSpec(
                    profile=deploy.profile(m),
                    served_model_name=deploy.served_name(m),
                    max_num_seqs=spec.max_num_seqs,
                    max_num_batched_tokens=opts.max_num_batched_tokens,
                    chunked_prefill=opts.chunked_prefill,
                    kv_capacity_tokens=opts.kv_capacity_tokens,
                    max_model_len=opts.max_model_len,
                    time_scale=opts.time_scale,
                )
                for m, spec in deploy.models.items()
            }
        else:
            opts = options if isinstance(options, EmulatorOptions) else EmulatorOptions(**(options or {}))
        self.specs = {m: s if isinstance(s, EmulatorSpec) else EmulatorSpec(**s) for m, s in (models or {}).items()}
        self.options = opts
        self.host = opts.host
        self.python = opts.python or sys.executable
        self.max_replicas = opts.max_replicas
        self.ready_timeout_s = opts.ready_timeout_s
        self.log_dir = Path(opts.log_dir) if opts.log_dir else None
        self.env_overrides = dict(env or {})
        self.procs: dict[str, tuple[ChildProcess, ReplicaHandle]] = {}
        self._profile_dir: Path | None = None  # profiles given as objects are written here

    # -- Provisioner --------------------------------------------------------------------
    def capacity(self, model: str) -> int | None:
        if model not in self.specs:
            return 0
        return None if self.max_replicas is None else max(0, self.max_replicas - len(self.procs))

    async def start(self, model: str, replica_id: str) -> ReplicaHandle:
        if model not in self.specs:
            raise EmulatorStartError(f"no emulator spec for model {model!r} (have {sorted(self.specs)})")
        if replica_id in self.procs:
            raise EmulatorStartError(f"replica {replica_id!r} is already running")
        cap = self.capacity(model)
        if cap is not None and cap <= 0:
            raise EmulatorStartError(f"no room for another replica (max_replicas={self.max_replicas})")
        last: Exception | None = None
        for _ in range(3):  # a free port can be taken between picking and binding it: retry
            try:
                return await self._start_once(model, replica_id)
            except ChildStartError as e:
                last = e
                if "address already in use" not in str(e):
                    raise
        raise last

    async def stop(self, handle: ReplicaHandle) -> None:
        entry = self.procs.pop(handle.replica_id, None)
        if entry is not None:
            await asyncio.to_thread(entry[0].stop, STOP_GRACE_S)

    async def close(self) -> None:
        """Stop every emulator this provisioner started (idempotent)."""
        entries, self.procs = list(self.procs.values()), {}
        await asyncio.gather(
            *(asyncio.to_thread(child.stop, STOP_GRACE_S) for child, _ in entries), return_exceptions=True
        )
        if self._profile_dir is not None:
            shutil.rmtree(self._profile_dir, ignore_errors=True)
            self._profile_dir = None

    def _profile_ref(self, model: str) -> str:
        p = self.specs[model].profile
        if isinstance(p, str):
            return p
        if self._profile_dir is None:
            self._profile_dir = Path(tempfile.mkdtemp(prefix="cato-emulator-profiles-"))
        path = self._profile_dir / f"{model.replace('/', '_')}.yaml"
        if not path.exists():
            save_profile(p, path)
        return str(path)

    # -- internals ----------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        root = _project_root()
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        env.update(self.env_overrides)
        return env

    async def _start_once(self, model: str, replica_id: str) -> ReplicaHandle:
        spec = self.specs[model]
        served = spec.served_model_name or model
        port = free_port(self.host)
        profile_ref = self._profile_ref(model)
        cmd = spec.command(self.python, self.host, port, served, profile_ref)
        log_path = (self.log_dir or Path(tempfile.gettempdir())) / f"emulator-{replica_id}-{port}.log"
        child = ChildProcess(cmd, self._environment(), log_path, "emulator").start()
        url = f"http://{self.host}:{port}"
        handle = ReplicaHandle(
            replica_id,
            model,
            served,
            url,
            0,
            {"pid": child.pid, "port": port, "log_path": str(log_path), "profile": profile_ref},
        )
        self.procs[replica_id] = (child, handle)  # from now on, close() stops it too
        try:
            handle.meta["ready_s"] = await asyncio.to_thread(
                child.wait_ready, url + "/v1/models", self.ready_timeout_s, lists_model(served), 0.1
            )
        except BaseException:
            self.procs.pop(replica_id, None)
            await asyncio.to_thread(child.stop, STOP_GRACE_S)
            raise
        return handle
