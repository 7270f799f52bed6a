"""Running the gateway in the foreground: replicas first, then HTTP, and a clean stop on signals.

SIGINT (Ctrl-C) and SIGTERM stop the server gracefully and then every replica the
provisioner started (Gateway.close -> Fleet.close -> the provisioner's close), before the
process exits; a second signal skips waiting for open connections. A signal while the
replicas are still starting stops the ones that started. Once the replicas are being
stopped, further signals are ignored: cutting that short would leave them running (nothing
else stops them, no atexit hook included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import uvicorn

from cato_live.deploy import Deploy
from cato_live.gateway.app import Gateway, create_app
from cato_live.gateway.fleet import StartupError
from cato_live.provisioners.base import Provisioner

EXIT_OK, EXIT_START_FAILED, EXIT_INTERRUPTED = 0, 1, 130
log = logging.getLogger("cato_live.gateway.serve")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # Ours are installed on the loop (see run); uvicorn's would re-raise the signal at
        # exit and cut the replicas' shutdown short.
        yield


def run(deploy: Deploy, provisioner: Provisioner, log_level: str = "info", access_log: bool = False) -> int:
    """Serve until a signal; the exit code."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per forwarded call otherwise
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(_main(deploy, provisioner, log_level, access_log))


def _loop_factory():
    """uvloop's event loop when installed (the ``live`` extra): a good part of the gateway's
    CPU per call is the event loop's own; else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _main(deploy: Deploy, provisioner: Provisioner, log_level: str, access_log: bool) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    gw = Gateway(deploy, provisioner)
    server = _Server(
        uvicorn.Config(
            create_app(deploy, gateway=gw),
            host=deploy.host,
            port=deploy.port,
            log_level=log_level,
            access_log=access_log,
            lifespan="on",
        )
    )
    serving = closing = False

    def on_signal() -> None:
        if closing:
            log.info("stopping the replicas; signal ignored")
        elif not serving:
            main.cancel()
        elif server.should_exit:
            server.force_exit = True
        else:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if deploy.token is None and deploy.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s with no token: anyone who can reach it can use the replicas", deploy.host)
    try:
        try:
            await gw.start()
        except asyncio.CancelledError:
            print("interrupted while the replicas were starting; stopping them", file=sys.stderr)
            return EXIT_INTERRUPTED
        except StartupError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_START_FAILED
        serving = True
        await server.serve()
        return EXIT_OK
    finally:
        closing = True
        await gw.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
