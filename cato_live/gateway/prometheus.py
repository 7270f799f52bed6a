"""The gateway's Prometheus metrics, in a registry of its own (one per app, no global state).

Counters move on the request path; queue lengths, calls in flight and replica states are
read from the pools only when /metrics is scraped, so they cost the request path nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from cato_live.gateway.live_pool import LivePool

STATES = ("starting", "ready", "draining", "released", "failed")


class _PoolCollector:
    """Gauges computed at scrape time from the live pools."""

    def __init__(self, pools: Callable[[], Iterable[LivePool]]):
        self._pools = pools

    def collect(self):
        queue = GaugeMetricFamily(
            "cato_queue_length", "Calls queued in the gateway for a replica", labels=["model", "replica"]
        )
        running = GaugeMetricFamily(
            "cato_replica_in_flight", "Calls a replica is serving now", labels=["model", "replica"]
        )
        in_flight = GaugeMetricFamily(
            "cato_in_flight", "Calls in the gateway: held, queued or at a replica", labels=["model"]
        )
        pending = GaugeMetricFamily(
            "cato_pending", "Calls held back: no replica ready, or the router's retry", labels=["model"]
        )
        replicas = GaugeMetricFamily("cato_replicas", "Replicas by state", labels=["model", "state"])
        for pool in self._pools():
            for rep in pool.replicas:
                queue.add_metric([pool.model, rep.id], rep.state.queued)
                running.add_metric([pool.model, rep.id], rep.state.running)
            in_flight.add_metric([pool.model], pool.core.in_flight())
            pending.add_metric([pool.model], pool.core.pending)
            counts = dict.fromkeys(STATES, 0)
            for rep in pool.history:
                counts["failed" if rep.failed else rep.state.state] += 1
            for state, n in counts.items():
                replicas.add_metric([pool.model, state], n)
        yield from (queue, running, in_flight, pending, replicas)


class GatewayMetrics:
    def __init__(self, pools: Callable[[], Iterable[LivePool]]):
        self.registry = CollectorRegistry()
        r = self.registry
        self._routed = Counter(
            "cato_requests_routed",
            "Calls routed to a replica, by priority (0 violated, 1 at risk, 2 on time)",
            ["model", "priority"],
            registry=r,
        )
        self._violations = Counter(
            "cato_slack_violations",
            "Calls that missed their node deadline (first token if TTFT-critical, else the end)",
            ["model", "task_type"],
            registry=r,
        )
        self._failures = Counter(
            "cato_call_failures", "Calls answered with an error by the gateway", ["model", "status"], registry=r
        )
        self._retries = Counter("cato_retries", "Attempts retried on another replica", ["model"], registry=r)
        self._replica_failures = Counter(
            "cato_replica_failures", "Replicas taken out of routing as dead", ["model"], registry=r
        )
        r.register(_PoolCollector(pools))
        self._children: dict[tuple, object] = {}  # labelled children, looked up once

    def _child(self, metric: Counter, *labels: str):
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def routed(self, model: str, priority: int) -> None:
        self._child(self._routed, model, str(priority)).inc()

    def violation(self, model: str, task_type: str) -> None:
        self._child(self._violations, model, task_type).inc()

    def failure(self, model: str, status: str) -> None:
        self._child(self._failures, model, status).inc()

    def retry(self, model: str) -> None:
        self._child(self._retries, model).inc()

    def replica_failed(self, model: str) -> None:
        self._child(self._replica_failures, model).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
