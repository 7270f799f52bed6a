"""The gateway's replicas over time: started through the provisioner, scaled, drained, failed.

Clock: ``time.monotonic()`` relative to the fleet's creation, passed to the core as ``now``.
A replica counts as provisioned from the moment it is asked for (``asked_s``) through its
cold start (``ready_s``) to its release (``released_s``). Every model has its own scaler,
asked every ``interval_s`` through the core's pool (``ModelPool.scale``); the fleet starts the
replicas it adds, and stops those the pool releases once they are drained.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cato_core.routers import make_router
from cato_core.scalers import make_scaler
from cato_live.deploy import Deploy
from cato_live.gateway.live_pool import LivePool, LiveReplica
from cato_live.gateway.prometheus import GatewayMetrics
from cato_live.gateway.replica_client import model_connector, replica_session
from cato_live.provisioners.base import Provisioner

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("cato_live.gateway.fleet")

UNBOUNDED = 1 << 30  # "free" for a provisioner with no known limit


class StartupError(RuntimeError):
    """An initial replica did not start."""


class Fleet:
    def __init__(self, deploy: Deploy, provisioner: Provisioner, clock: Callable[[], float] = time.monotonic):
        self.deploy, self.provisioner, self._clock = deploy, provisioner, clock
        self.t0 = clock()
        self.router = make_router(deploy.router, deploy.router_params, seed=deploy.seed)
        self.metrics = GatewayMetrics(lambda: self.pools.values())  # noqa: PLW0108 -- self.pools is bound below
        self.pools = {
            m: LivePool(
                m,
                deploy.profile(m),
                spec.max_num_seqs,
                self.router,
                make_scaler(deploy.scaler, deploy.scaler_params),
                self.now,
                self.metrics,
                on_released=self._stop_later,
            )
            for m, spec in deploy.models.items()
        }
        self._numbers = dict.fromkeys(deploy.models, 0)
        self._tasks: set[asyncio.Task] = set()
        self._connectors: dict[str, aiohttp.TCPConnector] = {}  # per model, shared by its replicas
        self.started = self.closed = False

    def now(self) -> float:
        return self._clock() - self.t0

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start every model's initial replicas and wait for them; then run the scalers."""
        self.started = True
        starts = [
            self._start(pool, pool.new_replica(self._next_id(m)))
            for m, pool in self.pools.items()
            for _ in range(self.deploy.models[m].replicas)
        ]
        results = await asyncio.gather(*starts)
        failed = [(rep, why) for ok, rep, why in results if not ok]
        if failed:  # the whole error: a child's names its log and ends with the log's tail
            raise StartupError(f"replica {failed[0][0].id} did not start: {failed[0][1]}")
        for pool in self.pools.values():
            if pool.scaler.interval_s:
                self._spawn(self._scale_loop(pool))

    async def close(self) -> None:
        """Stop scaling, then every replica the provisioner started (idempotent)."""
        if self.closed:
            return
        self.closed = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pool in self.pools.values():
            for rep in pool.history:
                if rep.client is not None:
                    await rep.client.close()
                if rep.state.state != "released":
                    rep.state.release(self.now())
        connectors, self._connectors = list(self._connectors.values()), {}
        for connector in connectors:
            await connector.close()
        await self.provisioner.close()

    def rows(self) -> list[dict]:
        """The replicas table: one row per replica ever asked for."""
        now = self.now()
        return [rep.row(now) for pool in self.pools.values() for rep in pool.history]

    # -- replicas ------------------------------------------------------------------------
    def _next_id(self, model: str) -> str:
        self._numbers[model] += 1
        return f"{model}-{self._numbers[model]}"

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(self, pool: LivePool, rep: LiveReplica) -> tuple[bool, LiveReplica, str | None]:
        """Start ``rep``: (started, rep, why not: the provisioner's whole error)."""
        try:
            handle = await self.provisioner.start(pool.model, rep.id)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001  (any provisioner failure takes the replica out)
            why = f"{type(e).__name__}: {e}".strip()
            rep.failed = why.splitlines()[0]
            log.error("replica %s did not start: %s", rep.id, rep.failed)
            pool.release(rep)
            return False, rep, why
        rep.handle = handle
        if rep.state.state == "released":  # released while it was starting
            self._stop_later(rep)
            return True, rep, None
        pool.mark_ready(rep, handle, self._session(pool.model))
        log.info("replica %s ready at %s after %.1f s", rep.id, handle.base_url, rep.state.ready_s - rep.state.asked_s)
        return True, rep, None

    def _session(self, model: str) -> aiohttp.ClientSession:
        """A new replica's session, on its model's shared connection pool."""
        spec = self.deploy.models[model]
        connector = self._connectors.get(model)
        if connector is None or connector.closed:
            connector = self._connectors[model] = model_connector(spec)
        return replica_session(spec, connector)

    def _stop_later(self, rep: LiveReplica) -> None:
        """A released or failed replica: close its client and let the provisioner stop it."""
        if self.closed or rep.handle is None:
            return

        async def stop() -> None:
            if rep.client is not None:
                await rep.client.close()
            try:
                await self.provisioner.stop(rep.handle)
            except Exception as e:  # noqa: BLE001  (a failed stop must not stop the gateway)
                log.warning("replica %s did not stop cleanly: %s", rep.id, e)

        self._spawn(stop())

    def fail(self, pool: LivePool, rep: LiveReplica, reason: str) -> None:
        if rep.state.state != "released":
            log.warning("replica %s taken out of routing: %s", rep.id, reason)
            pool.fail(rep, reason)

    async def _scale_loop(self, pool: LivePool) -> None:
        scaler = pool.scaler

        def add() -> None:
            log.info("scaler %s adds a replica of %s", scaler.name, pool.model)
            self._spawn(self._start(pool, pool.new_replica(self._next_id(pool.model))))

        while True:
            await asyncio.sleep(scaler.interval_s)
            cap = self.provisioner.capacity(pool.model)
            decision = pool.core.scale(self.now(), UNBOUNDED if cap is None else cap, add)
            for state in decision.release:
                log.info("scaler %s releases %s", scaler.name, state.id)
