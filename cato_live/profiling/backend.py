"""The replica to profile: started through the DEPLOY's provisioner, or one already running.

Also what the provenance says about it: vLLM's version, its KV capacity and the host.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cato_live.deploy import Deploy
from cato_live.provisioners.base import Provisioner

REPLICA_ID = "profile-0"


class ReplicaDidNotStart(RuntimeError):
    """The provisioner could not start the replica (the message has its log tail, if any)."""


@dataclass
class Replica:
    url: str
    cold_start_s: float | None  # provisioner start to ready; None: it was already running
    meta: dict = field(default_factory=dict)


@contextlib.asynccontextmanager
async def started_replica(provisioner: Provisioner, model: str) -> AsyncIterator[Replica]:
    """One replica of ``model`` from the provisioner, timed from start to ready; always closed."""
    try:
        t0 = time.perf_counter()
        try:
            handle = await provisioner.start(model, REPLICA_ID)
        except (RuntimeError, OSError, TimeoutError) as e:
            raise ReplicaDidNotStart(f"replica {REPLICA_ID} of {model!r} did not start: {e}") from None
        yield Replica(handle.base_url, time.perf_counter() - t0, dict(handle.meta))
    finally:
        await provisioner.close()


@dataclass
class ServerFacts:
    version: str
    max_model_len: int | None
    kv_capacity_tokens: int | None
    kv_basis: str


async def server_facts(url: str, served: str, headers: dict[str, str]) -> ServerFacts:
    """vLLM's version (/version), the model's max_model_len (/v1/models) and KV capacity (/metrics)."""
    async with httpx.AsyncClient(base_url=url, timeout=10.0, headers=headers) as http:
        version, max_len, kv, basis = "unknown (no /version)", None, None, "not reported by the server"
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = await http.get("/version")
            if resp.status_code == 200:
                version = str(resp.json().get("version", version))
        with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
            for m in (await http.get("/v1/models")).json().get("data", []):
                if m.get("id") == served and m.get("max_model_len"):
                    max_len = int(m["max_model_len"])
        with contextlib.suppress(httpx.HTTPError):
            resp = await http.get("/metrics")
            info = vllm_samples(resp.text).get("vllm:cache_config_info") if resp.status_code == 200 else None
            labels = info.labels if info is not None else {}
            if labels.get("kv_cache_size_tokens", "").isdigit():
                kv, basis = int(labels["kv_cache_size_tokens"]), "vLLM /metrics cache_config_info kv_cache_size_tokens"
            elif labels.get("num_gpu_blocks", "").isdigit() and labels.get("block_size", "").isdigit():
                kv = int(labels["num_gpu_blocks"]) * int(labels["block_size"])
                basis = "vLLM /metrics cache_config_info num_gpu_blocks x block_size"
    return ServerFacts(version, max_len, kv, basis)


def vllm_samples(text: str) -> dict:
    """The first sample of each ``vllm:`` metric of a /metrics page (prometheus_client's
    parser), by sample name; what does not parse ends the reading."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {}
    with contextlib.suppress(ValueError):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("vllm:"):
                    out.setdefault(sample.name, sample)
    return out


def host_cpu() -> str:
    """This machine's CPU model and logical CPU count."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} logical CPUs"


def device_text(deploy: Deploy, meta: dict) -> str:
    """What the replica ran on, from the provisioner's handle (process: its device and ids)."""
    kind = meta.get("device")
    ids = meta.get("devices")
    if kind == "cpu":
        return f"{host_cpu().split(',')[0]}, {len(ids or [])} core(s) {ids} of {os.cpu_count()}"
    if kind:
        return f"{kind} devices {ids}"
    return f"a replica of the {deploy.provisioner.kind} provisioner"
