"""The CATO gateway's hop: how much later its clients see a token than the replica's own.

A call through the gateway crosses two more HTTP hops than one sent to the replica: the
client to the gateway (read, parsed and routed there) and back (each chunk relayed). The
profile's request_latency_s is measured straight at the replica, so the simulator would
otherwise show gateway clients their tokens that much early. Here the gateway runs in this
process over the replica just measured (a static provisioner: nothing is started), and lone
calls alternate between the profiler's own client straight to the replica and the replay's
client (cato_live.replay.client, aiohttp) through the gateway; the hop is the median of the
pairs' TTFT differences. Measured this way on the 2-core host: about 2 ms (1 ms in, 0.6 ms
out, 0.5 ms for aiohttp's client over a bare socket).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from cato_live.deploy import Deploy, ProvisionerSpec
from cato_live.headers import request_headers
from cato_live.profiling.measure import Client, MeasureError

PAIRS = 30  # lone calls each way; the median difference settles within about 0.5 ms
PROMPT_TOKENS = 64
PAUSE_S = 0.02  # between calls, so each runs alone on an idle replica


@dataclass(frozen=True)
class GatewayHop:
    seconds: float  # median of (through the gateway - direct) over the pairs, at least 0
    direct_s: float  # median TTFT straight to the replica
    through_s: float  # median TTFT through the gateway
    pairs: int

    def describe(self, router: str) -> str:
        return (
            f"gateway_latency_s: a lone call's first token reached a client through CATO's gateway "
            f"(router {router}, in the profiling process) {self.seconds * 1e3:.2f} ms later than straight "
            f"from the replica: median of {self.pairs} alternating pairs' differences (medians: direct "
            f"{self.direct_s * 1e3:.2f} ms, through the gateway {self.through_s * 1e3:.2f} ms)"
        )


def _hop_deploy(d: Deploy, model: str, url: str) -> tuple[Deploy, str, str]:
    """``d`` reduced to ``model`` on the one replica at ``url``; a task type and LLM node of it."""
    spec = d.models[model].model_copy(update={"replicas": 1})
    found = next(
        (
            (name, t, n)
            for name, t in d.task_types.items()
            for n in t.nodes
            if n.kind == "llm" and t.model_of(n, d.default_model) == model
        ),
        None,
    )
    if found is None:
        raise MeasureError(f"no task type of the DEPLOY has an LLM node of {model!r}")
    tname, t, node = found
    hop = d.model_copy(
        update={
            "models": {model: spec},
            "default_model": model,
            "task_types": {tname: t},
            "scaler": "fixed",
            "scaler_params": {},
            "token": None,
            "provisioner": ProvisionerSpec(kind="static", models={model: [url]}),
        }
    )
    return hop, tname, node.name


async def measure_gateway_hop(
    d: Deploy, model: str, client: Client, on_pair: Callable[[], None] = lambda: None, pairs: int = PAIRS
) -> GatewayHop:
    """Lone calls straight to ``client``'s replica and through an in-process gateway over it."""
    from cato_live.provisioners.registry import make_provisioner
    from cato_live.replay.cli import GatewayNotStarted, deployed_gateway
    from cato_live.replay.client import RequestFailed, stream_completion

    hop_deploy, task_type, node = _hop_deploy(d, model, client.base_url)
    direct, through, diffs = [], [], []
    clock = time.perf_counter
    try:
        async with (
            deployed_gateway(hop_deploy, make_provisioner(hop_deploy), asyncio.Event()) as gw,
            aiohttp.ClientSession() as session,
        ):
            url = gw.url + "/v1/completions"

            async def via_gateway(i: int) -> float:
                prompt = client.prompt(PROMPT_TOKENS)
                body = {"model": model, "prompt": prompt, "max_tokens": 2, "ignore_eos": True, "temperature": 0.0}
                sent = clock()
                headers = request_headers(task_type, f"hop-{i}", node, 60.0, sent + 60.0, sent)
                res = await stream_completion(session, url, body, headers, clock, client.timeout_s)
                return res.first_token_s - sent

            async def straight() -> float:
                a = await client.stream(PROMPT_TOKENS, 2)
                return a.times[0] - a.sent

            await via_gateway(-1)  # opens the gateway's and this session's connections
            for i in range(pairs):
                await asyncio.sleep(PAUSE_S)
                if i % 2:  # alternate who goes first, so a drift of the machine hits both alike
                    g = await via_gateway(i)
                    await asyncio.sleep(PAUSE_S)
                    s = await straight()
                else:
                    s = await straight()
                    await asyncio.sleep(PAUSE_S)
                    g = await via_gateway(i)
                direct.append(s)
                through.append(g)
                diffs.append(g - s)
                on_pair()
    except GatewayNotStarted as e:
        raise MeasureError(f"the gateway over {client.base_url} did not start: {e.reason}") from None
    except RequestFailed as e:
        raise MeasureError(f"a call through the gateway over {client.base_url} failed: {e.reason}") from None
    return GatewayHop(max(statistics.median(diffs), 0.0), statistics.median(direct), statistics.median(through), pairs)
