"""``static``: replicas you run yourself, as a list of URLs per model.

    provisioner:
      kind: static
      ready_timeout_s: 60        # how long start() waits for a URL to answer
      models:
        codellama-7b: [http://10.0.0.5:8000, http://10.0.0.6:8000]

``start`` takes the next URL not in use and returns once its GET /v1/models lists the
served model; ``stop`` only hands the URL back (the server keeps running: it is yours).
The replicas coming up at once share one HTTP client (closed once none is left waiting),
and at most ``READY_CHECKS`` of their GETs are in flight at a time: a client each cost
about 0.85 MB (its TLS context) and a thousand GETs at once a slow start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cato_live.deploy import Deploy
from cato_live.provisioners.base import ReplicaHandle
from cato_live.provisioners.config import provisioner_config


class StaticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, list[str]]
    ready_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("models")
    @classmethod
    def _urls(cls, models: dict[str, list[str]]) -> dict[str, list[str]]:
        out = {}
        for name, urls in models.items():
            if not urls:
                raise ValueError(f"{name}: at least one URL")
            clean = []
            for u in urls:
                if not u.startswith(("http://", "https://")):
                    raise ValueError(f"{name}: {u!r} is not an http(s):// URL")
                clean.append(u.rstrip("/").removesuffix("/v1"))
            if len(set(clean)) != len(clean):
                raise ValueError(f"{name}: a URL repeats")
            out[name] = clean
        return out


READY_CHECKS = 16  # readiness GETs in flight at once, over every replica of the provisioner


def _ready_client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=READY_CHECKS, max_keepalive_connections=READY_CHECKS)
    return httpx.AsyncClient(timeout=2.0, limits=limits)


async def wait_until_serving(
    base_url: str,
    served: str,
    timeout_s: float,
    client: httpx.AsyncClient | None = None,
    slots: asyncio.Semaphore | None = None,
) -> None:
    """Poll GET /v1/models until it lists ``served``; TimeoutError with the last reason.
    ``client``: the one to poll with (default: one of its own); ``slots``: held for each GET."""
    end = time.monotonic() + timeout_s
    if client is None:
        async with _ready_client() as own:
            return await _poll(base_url, served, timeout_s, end, own, slots)
    return await _poll(base_url, served, timeout_s, end, client, slots)


async def _poll(
    base_url: str,
    served: str,
    timeout_s: float,
    end: float,
    client: httpx.AsyncClient,
    slots: asyncio.Semaphore | None,
) -> None:
    reason = "no answer"
    while True:
        try:
            async with slots if slots is not None else contextlib.nullcontext():
                resp = await client.get(base_url + "/v1/models")
            ids = [m.get("id") for m in resp.json().get("data", [])] if resp.status_code == 200 else []
            if served in ids:
                return
            reason = f"HTTP {resp.status_code}, models {ids}"
        except (httpx.HTTPError, ValueError, AttributeError) as e:
            reason = type(e).__name__
        if time.monotonic() >= end:
            raise TimeoutError(f"{base_url} does not serve {served!r} after {timeout_s:g} s ({reason})")
        await asyncio.sleep(0.25)


class StaticProvisioner:
    kind = "static"

    def __init__(self, deploy: Deploy):
        self.deploy = deploy
        self.config = provisioner_config(deploy, StaticConfig)
        self._in_use: dict[str, str] = {}  # replica id -> URL
        # shared by the replicas coming up (start), closed once none is left waiting
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0

    def _free(self, model: str) -> list[str]:
        used = set(self._in_use.values())
        return [u for u in self.config.models[model] if u not in used]

    async def start(self, model: str, replica_id: str) -> ReplicaHandle:
        free = self._free(model)
        if not free:
            raise RuntimeError(f"every URL of {model!r} is in use")
        url = self._in_use[replica_id] = free[0]
        served = self.deploy.served_name(model)
        if self._client is None:
            self._client, self._slots = _ready_client(), asyncio.Semaphore(READY_CHECKS)
        client = self._client
        self._waiting += 1
        try:
            await wait_until_serving(url, served, self.config.ready_timeout_s, client, self._slots)
        except BaseException:
            self._in_use.pop(replica_id, None)
            raise
        finally:
            self._waiting -= 1
            if self._waiting == 0 and self._client is client:  # the last one waiting
                self._client = self._slots = None
                await client.aclose()
        return ReplicaHandle(replica_id, model, served, url)

    async def stop(self, handle: ReplicaHandle) -> None:
        self._in_use.pop(handle.replica_id, None)

    async def close(self) -> None:
        self._in_use.clear()
        client, self._client, self._slots = self._client, None, None
        if client is not None:
            await client.aclose()

    def capacity(self, model: str) -> int | None:
        return len(self._free(model))
