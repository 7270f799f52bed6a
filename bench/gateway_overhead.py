"""The CATO gateway's added latency, against going straight to the same vLLM replica.

One real vLLM server (CPU build, the tiny local model) and a `cato-live serve` gateway in
front of it. At each rate, after a warm-up, open-loop Poisson load of streamed completions
(token-ID prompts of 32 tokens, 8 output tokens) alternates in short rounds between going
straight to vLLM and going through the gateway, so drift on this shared 2-core machine
hits both alike. Prints p50/p99 TTFT and E2E of each, the gateway's added latency (p50 and
p99 differences), the ratio gateway/direct, and the gateway's CPU time per request.

Cores: with two or more, vLLM (its API server and engine) is pinned to core 0 and the
gateway and the load generator to core 1, so the gateway never takes CPU from the replica
it is measured against, as on a real host where the replica has its own accelerator and
cores. With one core everything shares it.

    make vllm && python bench/gateway_overhead.py [--rates 50,100] [--seconds 10]

Uses CATO_VLLM_PYTHON and CATO_TINY_MODEL (default: the Makefile's .vllm-venv and
.cache/tiny-model).

Many-replica mode (``--replicas 10,1000``): no vLLM; one stub OpenAI server process
(bench/stub_openai.py: streams the requested max_tokens chunks at once, no model) stands in
for every replica, each replica its own URL under a path prefix (``http://127.0.0.1:P/r17``),
which the ``static`` provisioner and the gateway take as a replica of its own (its own client
session and connections). One gateway per replica count (router cato, scaler fixed), all up
at once; each round goes straight to the stub, then through each gateway (their order
alternating by round). Prints per path p50/p99 TTFT and E2E, each gateway's added latency
over the stub and its CPU per call, how many replicas took calls and its RSS, and the ratios
last/first count (1000/10). The stub is on core 0, the gateways and the load on core 1.

``--replica-ports``: each replica at a port of its own instead (the stub listens on as many
consecutive ports as the largest count), as real replicas are: the gateway then holds
connections per replica, so the figures include what spreading calls over many replicas
costs in connections, not only the routing.

    python bench/gateway_overhead.py --replicas 10,1000 [--replica-ports] [--rates 50,100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cato_live.provisioners.vllm_process import VllmServer, free_port  # noqa: E402

SERVED = "cato-tiny"


async def one(client: httpx.AsyncClient, url: str, prompt: list[int], headers: dict) -> tuple[float, float] | None:
    body = {
        "model": SERVED,
        "prompt": prompt,
        "max_tokens": 8,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft = None
    try:
        async with client.stream("POST", url + "/v1/completions", json=body, headers=headers) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", "replace")
                print(f"  {url}: HTTP {resp.status_code}: {' '.join(text.split())[:200]}")
                return None
            async for line in resp.aiter_lines():
                if ttft is None and line.startswith("data: {") and '"text"' in line:
                    ttft = time.perf_counter() - t0
    except httpx.HTTPError as e:  # counted as failed; the phase reports how many
        print(f"  {url}: {e.__class__.__name__}")
        return None
    return ttft, time.perf_counter() - t0


async def phase(url: str, rate: float, seconds: float, seed: int, headers: dict) -> np.ndarray:
    """Open loop at ``rate`` for ``seconds``: (ttft, e2e) of each answered request."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / rate, size=int(rate * seconds))
    prompts = rng.integers(10, 2000, size=(len(gaps), 32)).tolist()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await one(client, url, prompts[0], headers)  # warm the connection and the server
        tasks = []
        start = time.perf_counter()
        due = 0.0
        for gap, prompt in zip(gaps, prompts, strict=True):
            due += gap
            await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(client, url, prompt, headers)))
        results = [r for r in await asyncio.gather(*tasks) if r is not None]
    if len(results) < len(gaps):
        print(f"  warning: {len(gaps) - len(results)} of {len(gaps)} requests failed at {url}")
    return np.array(results)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) * 1e3


def wait_health(url: str, proc: subprocess.Popen, timeout_s: float, path: str = "/health") -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with code {proc.returncode} before it answered")
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer {path} within {timeout_s:g} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_gateway(path: Path, urls: list[str]) -> tuple[subprocess.Popen, str]:
    """`cato-live serve` (router cato, scaler fixed) over ``urls`` as replicas of SERVED, its
    DEPLOY written to ``path``; the process and its URL."""
    port = free_port()
    deploy = {
        "host": "127.0.0.1",
        "port": port,
        "router": "cato",
        "scaler": "fixed",
        "default_task_type": "completion",
        "models": {
            SERVED: {"profile": "codellama-7b_a100", "served_model": SERVED, "replicas": len(urls), "max_num_seqs": 256}
        },
        "provisioner": {"kind": "static", "models": {SERVED: urls}},
    }
    path.write_text(yaml.safe_dump(deploy))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "cato_live", "serve", str(path), "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return gateway, f"http://127.0.0.1:{port}"


def replica_urls(port: int, n: int, own_ports: bool) -> list[str]:
    """The stub's addresses for n replicas: a port each, or one port and a path prefix each."""
    if own_ports:
        return [f"http://127.0.0.1:{port + i}" for i in range(n)]
    return [f"http://127.0.0.1:{port}/r{i}" for i in range(n)]


def free_port_range(n: int) -> int:
    """The first of n consecutive free ports (probed by binding each, from 20000 up)."""
    import socket

    base = 20000
    while base + n < 65536:
        for i in range(n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + i))
                except OSError:
                    base += i + 1
                    break
        else:
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


def many_replicas(args) -> None:
    """The gateway with few vs many replicas, all of them one stub server (see the docstring)."""
    counts = [int(n) for n in args.replicas.split(",")]
    cores = sorted(os.sched_getaffinity(0))
    stub_cores, gateway_cores = ({cores[0]}, {cores[1]}) if len(cores) > 1 else (set(cores), set(cores))
    os.sched_setaffinity(0, gateway_cores)  # this load generator and the gateways (children)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            port_count = max(counts) if args.replica_ports else 1
            stub_port = free_port_range(port_count)
            stub = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "bench/stub_openai.py"),
                    "--port",
                    str(stub_port),
                    "--port-count",
                    str(port_count),
                ],
                cwd=ROOT,
            )
            os.sched_setaffinity(stub.pid, stub_cores)  # before it starts any thread
            procs.append(stub)
            stub_url = f"http://127.0.0.1:{stub_port}"
            wait_health(stub_url, stub, 30, "/v1/models")
            gateways: dict[int, tuple[subprocess.Popen, str]] = {}
            for n in counts:
                gw, url = start_gateway(Path(tmp) / f"deploy-{n}.yaml", replica_urls(stub_port, n, args.replica_ports))
                procs.append(gw)
                gateways[n] = (gw, url)
            for n, (gw, url) in gateways.items():
                t0 = time.monotonic()
                wait_health(url, gw, 300)
                print(f"gateway with {n} replicas: {url}, up {time.monotonic() - t0:.1f} s after the wait began")
            print(
                f"stub {stub_url} on cores {sorted(stub_cores)}; gateways (router cato, scaler fixed) and load on "
                f"cores {sorted(gateway_cores)}; {args.seconds:g} s per path and rate in {args.rounds} alternating "
                f"rounds; 32-token prompts, 8 streamed tokens; times in ms"
            )
            print(f"{'rate/s':>6} {'path':<10} {'n':>5} {'TTFT p50':>9} {'TTFT p99':>9} {'E2E p50':>8} {'E2E p99':>8}")
            task = {"X-CATO-Task": "completion"}
            direct_url = replica_urls(stub_port, 1, args.replica_ports)[0]
            for rate in (float(r) for r in args.rates.split(",")):
                for _, url in gateways.values():
                    # warm-up: long enough for calls to reach every replica once, so the rounds
                    # measure a steady gateway, not its first connection to each replica
                    asyncio.run(phase(url, rate, max(3.0, 1.2 * max(counts) / rate), 99, task))
                slice_s = args.seconds / args.rounds
                direct: list[np.ndarray] = []
                via: dict[int, list[np.ndarray]] = {n: [] for n in counts}
                cpu = dict.fromkeys(counts, 0.0)
                for k in range(args.rounds):
                    direct.append(asyncio.run(phase(direct_url, rate, slice_s, k, {})))
                    for n in counts if k % 2 == 0 else counts[::-1]:
                        gw, url = gateways[n]
                        before = cpu_s(gw.pid)
                        via[n].append(asyncio.run(phase(url, rate, slice_s, k, task)))
                        cpu[n] += cpu_s(gw.pid) - before
                d = np.concatenate(direct)
                rows = {"direct": d} | {f"gw {n}": np.concatenate(via[n]) for n in counts}
                for name, a in rows.items():
                    print(
                        f"{rate:>6g} {name:<10} {len(a):>5} {pct(a[:, 0], 50):>9.2f} {pct(a[:, 0], 99):>9.2f} "
                        f"{pct(a[:, 1], 50):>8.2f} {pct(a[:, 1], 99):>8.2f}"
                    )
                figures: dict[int, dict[str, float]] = {}
                for n in counts:
                    a = rows[f"gw {n}"]
                    f = figures[n] = {"cpu_ms": 1e3 * cpu[n] / len(a)}
                    for col, metric in ((0, "TTFT"), (1, "E2E")):
                        for q in (50, 99):
                            f[f"{metric} p{q}"] = pct(a[:, col], q) - pct(d[:, col], q)
                    print(
                        f"{rate:>6g} gw {n:<7} added TTFT p50 {f['TTFT p50']:+.2f} p99 {f['TTFT p99']:+.2f}, "
                        f"E2E p50 {f['E2E p50']:+.2f} p99 {f['E2E p99']:+.2f} ms; CPU {f['cpu_ms']:.2f} ms per call "
                        f"({cpu[n] / args.seconds:.0%} of a core)"
                    )
                lo, hi = counts[0], counts[-1]
                if lo != hi:
                    ratios = ", ".join(
                        f"{key} {figures[hi][key] / figures[lo][key]:.2f}" if figures[lo][key] > 0 else f"{key} n/a"
                        for key in ("cpu_ms", "TTFT p50", "TTFT p99", "E2E p50", "E2E p99")
                    )
                    print(f"{rate:>6g} ratio {hi}/{lo}: CPU per call and added latency: {ratios}")
            for n, (gw, url) in gateways.items():
                table = httpx.get(url + "/v1/cato/replicas", timeout=30).json()["replicas"]
                used = sum(1 for r in table if r["requests"] > 0)
                print(f"gateway with {n} replicas: {used} took calls; RSS {rss_mb(gw.pid):.0f} MB")
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="50,100")
    ap.add_argument("--seconds", type=float, default=10.0, help="per path and rate")
    ap.add_argument("--rounds", type=int, default=5, help="alternations of direct and gateway")
    ap.add_argument(
        "--replicas", help="many-replica mode: replica counts served by one stub server, e.g. 10,1000 (no vLLM)"
    )
    ap.add_argument("--replica-ports", action="store_true", help="many-replica mode: each replica at a port of its own")
    args = ap.parse_args()
    if args.replicas:
        many_replicas(args)
        return
    python = os.environ.get("CATO_VLLM_PYTHON", str(ROOT / ".vllm-venv/bin/python"))
    model = os.environ.get("CATO_TINY_MODEL", str(ROOT / ".cache/tiny-model"))
    cores = sorted(os.sched_getaffinity(0))
    replica_cores, gateway_cores = ({cores[0]}, {cores[1]}) if len(cores) > 1 else (set(cores), set(cores))
    os.sched_setaffinity(0, replica_cores)  # vLLM and its engine process inherit this
    with (
        tempfile.TemporaryDirectory() as tmp,
        VllmServer(python, model, served_name=SERVED, cpu_core=cores[0], log_path=Path(tmp) / "vllm.log") as vllm,
    ):
        os.sched_setaffinity(0, gateway_cores)  # the gateway (a child) and this load generator
        vllm.wait_ready(timeout=300)
        gateway, gw = start_gateway(Path(tmp) / "deploy.yaml", [vllm.url])
        try:
            for _ in range(200):
                try:
                    if httpx.get(gw + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            print(
                f"vLLM {vllm.url} on cores {sorted(replica_cores)}, gateway {gw} and load on cores "
                f"{sorted(gateway_cores)}; {args.seconds:g} s per path and rate in {args.rounds} alternating "
                f"rounds; times in ms"
            )
            print(f"{'rate/s':>6} {'path':<8} {'n':>5} {'TTFT p50':>9} {'TTFT p99':>9} {'E2E p50':>8} {'E2E p99':>8}")
            task = {"X-CATO-Task": "completion"}
            for rate in (float(r) for r in args.rates.split(",")):
                asyncio.run(phase(gw, rate, 3.0, 99, task))  # warm-up: vLLM's and the gateway's paths
                slice_s = args.seconds / args.rounds
                direct, via, gw_cpu = [], [], 0.0
                for k in range(args.rounds):
                    direct.append(asyncio.run(phase(vllm.url, rate, slice_s, k, {})))
                    before = cpu_s(gateway.pid)
                    via.append(asyncio.run(phase(gw, rate, slice_s, k, task)))
                    gw_cpu += cpu_s(gateway.pid) - before
                direct, via = np.concatenate(direct), np.concatenate(via)
                for name, a in (("direct", direct), ("gateway", via)):
                    print(
                        f"{rate:>6g} {name:<8} {len(a):>5} {pct(a[:, 0], 50):>9.1f} {pct(a[:, 0], 99):>9.1f} "
                        f"{pct(a[:, 1], 50):>8.1f} {pct(a[:, 1], 99):>8.1f}"
                    )
                for col, metric in ((0, "TTFT"), (1, "E2E")):
                    for q in (50, 99):
                        d, g = pct(direct[:, col], q), pct(via[:, col], q)
                        print(f"{rate:>6g} added {metric} p{q}: {g - d:+.1f} ms (gateway/direct = {g / d:.2f})")
                print(
                    f"{rate:>6g} gateway CPU: {1e3 * gw_cpu / len(via):.2f} ms per request "
                    f"({gw_cpu / args.seconds:.0%} of a core)"
                )
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)


if __name__ == "__main__":
    main()
