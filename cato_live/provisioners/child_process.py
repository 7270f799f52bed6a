"""A server the provisioners start as a child: its own process group, its output in a log file.

    child = ChildProcess([python, "-m", "cato_emulator", ...], env, log_path, "emulator").start()
    try:
        child.wait_ready(url + "/v1/models", timeout=60, accept=lists_model("tiny"))
    except ChildStartError:       # it exited, or did not answer in time: the message has its log tail
        child.stop()
        raise
    ...
    child.stop()                  # SIGTERM to the group, SIGKILL after the grace period

A child leads a new session, so its own children (vLLM's engine core) share its process
group and ``stop`` reaches them too, even one that outlives the leader. The first line of
the log is the command. Nothing here stops a child at interpreter exit: whoever starts one
stops it (a provisioner's ``close``, a test fixture, a ``with`` block).

Blocking calls; async owners run ``wait_ready`` and ``stop`` in a thread
(``asyncio.to_thread``): ``stop`` also ends a ``wait_ready`` under way (it sees the exit).
Standard library only, so it runs wherever the provisioners do (Ray nodes included).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ChildStartError(RuntimeError):
    """The child exited before it was ready, or was not ready in time (the message has its log tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def lists_model(name: str) -> Callable[[bytes], bool]:
    """A readiness test for GET /v1/models: the body lists ``name`` (vLLM's and the emulator's)."""

    def accept(body: bytes) -> bool:
        try:
            data = json.loads(body).get("data", [])
        except (ValueError, AttributeError):
            return False
        return any(isinstance(m, dict) and m.get("id") == name for m in data)

    return accept


class ChildProcess:
    """One command run as a process-group leader. Not thread-safe beyond stop() ending a wait."""

    def __init__(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str] | None,
        log_path: str | os.PathLike,
        name: str = "child",
        cpus: Sequence[int] | None = None,
    ):
        self.cmd = [str(c) for c in cmd]
        self.cpus = list(cpus) if cpus else None  # run it (and what it starts) on these cores only
        self.env = dict(env) if env is not None else None  # None: this process's environment
        self.log_path = Path(log_path)
        self.name = name  # how messages call it: "vLLM", "emulator"
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ready_s: float | None = None
        self._stopped = False

    @property
    def pid(self) -> int | None:
        """The leader's pid, which is also its process group's id."""
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> ChildProcess:
        if self.proc is not None:
            raise RuntimeError(f"{self.name} was already started (pid {self.proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the handle
            log.write(("$ " + " ".join(self.cmd) + "\n").encode())
            log.flush()
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        if self.cpus:  # set before it starts any thread or process: they inherit it
            os.sched_setaffinity(self.proc.pid, self.cpus)
        return self

    def wait_ready(
        self, url: str, timeout: float, accept: Callable[[bytes], bool] | None = None, poll_s: float = 0.5
    ) -> float:
        """Poll GET ``url`` until it answers 200 (and ``accept(body)``); seconds since start().

        ChildStartError if the process exits first or ``timeout`` passes.
        """
        if self.proc is None or self.started_at is None:
            raise RuntimeError(f"wait_ready() before start() of {self.name}")
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ChildStartError(
                    f"{self.name} exited with code {code} before it was ready; log {self.log_path}:\n{self.tail()}"
                )
            if _answers(url, accept):
                self.ready_s = time.monotonic() - self.started_at
                return self.ready_s
            if time.monotonic() >= deadline:
                raise ChildStartError(f"{self.name} not ready after {timeout:g} s; log {self.log_path}:\n{self.tail()}")
            time.sleep(poll_s)

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM the process group; SIGKILL it after ``grace_s`` s; the leader's exit code.

        Members that outlive the leader get up to ``grace_s`` more, then SIGKILL. Idempotent
        (None if never started).
        """
        proc = self.proc
        if proc is None or self._stopped:  # once stopped, the group id may belong to others
            return None if proc is None else proc.returncode
        self._stopped = True
        pgid = proc.pid  # a session leader's group id is its pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            code = proc.wait()
        end = time.monotonic() + grace_s
        while _group_alive(pgid) and time.monotonic() < end:
            time.sleep(0.05)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        return code

    def tail(self, lines: int = 40) -> str:
        """The log's last lines (for error messages)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64_000))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = "running" if self.running() else "not running"
        return f"ChildProcess({self.name!r}, pid {self.pid}, {state})"


def _answers(url: str, accept: Callable[[bytes], bool] | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200 and (accept is None or accept(resp.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return False


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
