"""The gateway with many replicas: what each replica costs it (connections, readiness checks)."""

from __future__ import annotations

import asyncio

import httpx

from cato_live.deploy import parse_deploy
from cato_live.gateway.fleet import Fleet
from cato_live.provisioners import static
from cato_live.provisioners.base import ReplicaHandle
from cato_live.provisioners.static import StaticProvisioner
from tests.test_gateway_unit import SERVED, deploy_tree


class _Instant:
    """A provisioner whose replicas are up at once."""

    kind = "instant"

    async def start(self, model: str, replica_id: str) -> ReplicaHandle:
        return ReplicaHandle(replica_id, model, SERVED, f"http://127.0.0.1:9/{replica_id}")

    async def stop(self, handle: ReplicaHandle) -> None:
        pass

    async def close(self) -> None:
        pass

    def capacity(self, model: str) -> int | None:
        return None


def test_the_replicas_of_a_model_share_one_connection_pool_and_keep_their_own_session():
    """One pool per model, so a replica seen rarely (one of many) still finds a kept-alive
    connection to its server; closing one replica's session (taken out) leaves the others'
    open, and closing the fleet closes the pool."""
    d = parse_deploy(deploy_tree([f"http://127.0.0.1:9/r{i}" for i in range(3)], model={"keepalive_s": 7.0}), "t.yaml")

    async def go():
        fleet = Fleet(d, _Instant())
        await fleet.start()
        reps = fleet.pools["tiny"].replicas
        connectors = {id(rep.client.connector) for rep in reps}
        connector = reps[0].client.connector
        await reps[0].client.close()
        after_one = [rep.client.closed for rep in reps]
        await fleet.close()
        return connectors, connector, after_one, [rep.client.closed for rep in reps]

    connectors, connector, after_one, after_all = asyncio.run(go())
    assert len(connectors) == 1 and connector.limit == 0 and connector._keepalive_timeout == 7.0
    assert after_one == [True, False, False] and after_all == [True, True, True] and connector.closed


def test_the_static_provisioner_checks_readiness_with_one_client_and_bounded_concurrency(monkeypatch):
    n = 3 * static.READY_CHECKS + 5
    clients, now, most, asked = [], [0], [0], []

    async def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        now[0] += 1
        most[0] = max(most[0], now[0])
        await asyncio.sleep(0.005)
        now[0] -= 1
        return httpx.Response(200, json={"data": [{"id": SERVED}]})

    def client() -> httpx.AsyncClient:
        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(answer)))
        return clients[-1]

    monkeypatch.setattr(static, "_ready_client", client)
    d = parse_deploy(deploy_tree([f"http://127.0.0.1:9/r{i}" for i in range(n)]), "t.yaml")

    async def go():
        prov = StaticProvisioner(d)
        handles = await asyncio.gather(*(prov.start("tiny", f"tiny-{i}") for i in range(n)))
        await prov.close()
        return handles

    handles = asyncio.run(go())
    assert sorted(h.base_url for h in handles) == sorted(f"http://127.0.0.1:9/r{i}" for i in range(n))
    assert len(clients) == 1 and clients[0].is_closed  # closed once none was left waiting
    assert len(asked) == n and most[0] == static.READY_CHECKS


def test_the_static_provisioner_still_times_out_a_url_that_never_serves(monkeypatch):
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"id": "another"}]})

    monkeypatch.setattr(static, "_ready_client", lambda: httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    tree = deploy_tree(["http://127.0.0.1:9"])
    tree["provisioner"]["ready_timeout_s"] = 0.3
    prov = StaticProvisioner(parse_deploy(tree, "t.yaml"))

    async def go():
        try:
            await prov.start("tiny", "tiny-1")
        except TimeoutError as e:
            return str(e)

    assert asyncio.run(go()) == (
        "http://127.0.0.1:9 does not serve 'cato-tiny' after 0.3 s (HTTP 200, models ['another'])"
    )
    assert prov.capacity("tiny") == 1 and prov._client is None
