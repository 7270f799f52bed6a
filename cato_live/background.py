"""Run an ASGI app with uvicorn in a background thread: for tests, benchmarks and notebooks.

    with serve_in_thread(create_app(deploy)) as url:
        httpx.get(url + "/health")

The app's lifespan runs inside (for the gateway: its replicas start and stop with it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


@contextmanager
def serve_in_thread(
    app,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout_s: float = 300.0,
    log_level: str = "warning",
    graceful_s: float = 5.0,
) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL (``port=0``: a free port).
    At the end, open requests get ``graceful_s`` to finish."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on", timeout_graceful_shutdown=graceful_s
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{host}:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(30)
            raise RuntimeError(f"the app did not start on {host}:{port} (see its log above)")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(120)
