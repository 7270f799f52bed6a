"""The gateway's HTTP client for one replica (aiohttp, as in vLLM's own benchmark client).

On the gateway's hot path aiohttp costs about a third of httpx's CPU per streamed call
(bench/gateway_overhead.py), and the gateway must stay a thin layer. Only this module and
cato_live.gateway.forward see aiohttp.

Each replica has a session of its own (closed when the replica is taken out, which fails
the attempts that still meet it), and the replicas of a model share one connection pool
(:func:`model_connector`), kept-alive connections pooled by origin. A session per replica
with a pool of its own cost a new TCP connection on almost every call once there are many
replicas: with 1,000 replicas at 100 calls/s each one sees a call every 10 s, past
``keepalive_s``, so its connection had always been dropped. The pool is shared rather
than per replica, so a replica never gets another's connection unless both are the same
server (the same host and port).
"""

from __future__ import annotations

import aiohttp

from cato_live.deploy import ModelDeploy


def _timeout(spec: ModelDeploy) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=spec.connect_timeout_s, sock_read=spec.first_byte_timeout_s)


def model_connector(spec: ModelDeploy) -> aiohttp.TCPConnector:
    """The connection pool of every replica of one model: no cap on connections (each
    replica's calls in flight are capped at ``max_num_seqs`` by its slots, so a call never
    waits to connect); none reused after ``keepalive_s`` idle. Needs a running loop."""
    return aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=spec.keepalive_s)


def replica_session(spec: ModelDeploy, connector: aiohttp.BaseConnector | None = None) -> aiohttp.ClientSession:
    """One replica's session: on ``connector`` (the model's shared pool, which closing the
    session leaves open), or on a pool of its own with keep-alive connections for every
    slot (closed with the session). Silence past ``first_byte_timeout_s`` between bytes
    fails an attempt. Needs a running loop."""
    if connector is None:
        own = aiohttp.TCPConnector(limit=spec.max_num_seqs + 8, limit_per_host=0, keepalive_timeout=spec.keepalive_s)
        return aiohttp.ClientSession(connector=own, timeout=_timeout(spec))
    return aiohttp.ClientSession(connector=connector, connector_owner=False, timeout=_timeout(spec))
