"""The gateway's HTTP client for one replica (aiohttp, as in vLLM's own benchmark client).

On the gateway's hot path aiohttp costs about a third of httpx's CPU per streamed call
(bench/gateway_overhead.py), and the gateway must stay a thin layer. Only this module and
cato_live.gateway.forward see aiohttp.
"""

from __future__ import annotations

import aiohttp

from cato_live.deploy import ModelDeploy


def replica_session(spec: ModelDeploy) -> aiohttp.ClientSession:
    """Keep-alive connections for every slot, so a call never waits to connect (none reused
    after ``keepalive_s`` idle); silence past ``first_byte_timeout_s`` between bytes fails an
    attempt. Needs a running loop."""
    connector = aiohttp.TCPConnector(limit=spec.max_num_seqs + 8, limit_per_host=0, keepalive_timeout=spec.keepalive_s)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=spec.connect_timeout_s, sock_read=spec.first_byte_timeout_s
    )
    return aiohttp.ClientSession(connector=connector, timeout=timeout)
