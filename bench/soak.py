"""Soak: the gateway over emulated replicas under open-loop Poisson load for many minutes.

`cato-live serve` with experiments/deploy/emulator.yaml (emulated CodeLlama-7B 910B4
replicas, router cato, the cato scaler between 1 and 6 replicas; on a free port, replica
logs in a temporary folder) and, from this process, streamed /v1/completions at --rate
requests/s (Poisson, open loop: each request is sent at its time whatever the others do):
token-ID prompts of --prompt-tokens tokens, --max-tokens output tokens, task type
completion. Prints a row per minute, by send time, once that minute's requests have ended:
requests, errors by kind (HTTP status, an SSE error event, a stream cut before [DONE], or
the client's exception), TTFT and E2E p50/p95/p99 of the answered ones, the gateway
process's RSS at the minute's end and its ready replicas. At the end: RSS growth from the
first minute to the last, and from the minute the gateway's call-record buffer (DEPLOY's
records_kept) is full to the last (what a leak would show), and every error.

    python bench/soak.py [--minutes 10] [--rate 50] [--prompt-tokens 128] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

import aiohttp
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cato_live.deploy import Deploy  # noqa: E402
from cato_live.provisioners.child_process import free_port  # noqa: E402

DEPLOY = ROOT / "experiments/deploy/emulator.yaml"


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def one(session: aiohttp.ClientSession, url: str, body: dict, headers: dict) -> tuple:
    """(ttft, e2e, None) or (None, None, error kind)."""
    t0 = time.perf_counter()
    ttft = None
    done = False
    try:
        async with session.post(url + "/v1/completions", json=body, headers=headers) as resp:
            if resp.status != 200:
                await resp.read()
                return None, None, f"HTTP {resp.status}"
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data: "):
                        continue
                    if line.startswith(b'data: {"error"'):
                        return None, None, "SSE error event"
                    if line.startswith(b"data: [DONE]"):
                        done = True
                    elif ttft is None and b'"text"' in line:
                        ttft = time.perf_counter() - t0
    except (aiohttp.ClientError, TimeoutError) as e:
        return None, None, type(e).__name__
    if not done or ttft is None:
        return None, None, "stream ended before [DONE]" if not done else "no token"
    return ttft, time.perf_counter() - t0, None


def percentiles(a: list[float], width: int) -> str:
    """p50 (``width`` wide), p95 and p99 (6 wide) in ms."""
    if not a:
        return f"{'-':>{width}} {'-':>6} {'-':>6}"
    p50, p95, p99 = np.percentile(np.array(a) * 1e3, [50, 95, 99])
    return f"{p50:>{width}.0f} {p95:>6.0f} {p99:>6.0f}"


async def ready_replicas(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url + "/v1/cato/replicas", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            rows = (await resp.json())["replicas"]
        return sum(1 for r in rows if r["state"] == "ready")
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
        return None


async def soak(args, url: str, model: str, gateway_pid: int) -> None:
    rng = np.random.default_rng(args.seed)
    headers = {"X-CATO-Task": "completion"}
    minutes = args.minutes
    per_minute: list[list[asyncio.Task]] = [[] for _ in range(minutes)]
    samples: list[asyncio.Future] = [asyncio.get_running_loop().create_future() for _ in range(minutes)]
    sent_all = [asyncio.Event() for _ in range(minutes)]  # set once a minute's last request is sent
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    rss_by_minute: list[float] = []
    errors_total: collections.Counter = collections.Counter()
    sent_total = 0
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()

        async def sampler() -> None:
            for m in range(minutes):
                await asyncio.sleep(max(0.0, start + 60.0 * (m + 1) - time.perf_counter()))
                samples[m].set_result((rss_mb(gateway_pid), await ready_replicas(session, url)))

        async def load() -> None:
            due = 0.0
            end = 60.0 * minutes
            while True:
                due += rng.exponential(1 / args.rate)
                for m in range(min(int(due // 60), minutes)):
                    sent_all[m].set()
                if due >= end:
                    return
                await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
                body = {
                    "model": model,
                    "prompt": rng.integers(10, 2000, size=args.prompt_tokens).tolist(),
                    "max_tokens": args.max_tokens,
                    "ignore_eos": True,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                per_minute[int(due // 60)].append(asyncio.create_task(one(session, url, body, headers)))

        tasks = [asyncio.create_task(sampler()), asyncio.create_task(load())]
        print(
            f"{'min':>3} {'requests':>8} {'errors':>6} {'TTFT p50':>8} {'p95':>6} {'p99':>6} {'E2E p50':>7} "
            f"{'p95':>6} {'p99':>6} {'RSS MB':>7} {'ready':>5}  errors by kind (times in ms)",
            flush=True,
        )
        for m in range(minutes):
            rss, ready = await samples[m]
            await sent_all[m].wait()
            results = await asyncio.gather(*per_minute[m])
            ttft = [r[0] for r in results if r[2] is None]
            e2e = [r[1] for r in results if r[2] is None]
            errors = collections.Counter(r[2] for r in results if r[2] is not None)
            errors_total.update(errors)
            sent_total += len(results)
            rss_by_minute.append(rss)
            kinds = ", ".join(f"{k}: {v}" for k, v in errors.most_common()) or "-"
            print(
                f"{m + 1:>3} {len(results):>8} {sum(errors.values()):>6} {percentiles(ttft, 8)} "
                f"{percentiles(e2e, 7)} {rss:>7.1f} {ready if ready is not None else '?':>5}  {kinds}",
                flush=True,
            )
        await asyncio.gather(*tasks)
    first, last = rss_by_minute[0], rss_by_minute[-1]
    print(
        f"gateway RSS: {first:.1f} MB after minute 1 -> {last:.1f} MB after minute {minutes} "
        f"({(last - first) / first:+.1%}); max {max(rss_by_minute):.1f} MB"
    )
    # The gateway keeps its last records_kept call records (/v1/cato/nodes) by design: RSS
    # rises until that buffer is full. Growth after it is what a leak would show.
    full = math.ceil(args.records_kept / args.rate / 60)
    if full < minutes:
        settled = rss_by_minute[full - 1]
        print(
            f"after the {args.records_kept:,}-record buffer filled (minute {full}): {settled:.1f} MB -> "
            f"{last:.1f} MB ({(last - settled) / settled:+.1%}, goal < 5%)"
        )
    else:
        print(f"the {args.records_kept:,}-record buffer fills in minute {full}: run longer to see growth after it")
    kinds = ", ".join(f"{k}: {v}" for k, v in errors_total.most_common()) or "none"
    print(f"requests: {sent_total}; errors: {sum(errors_total.values())} ({kinds})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second (Poisson)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--timeout-s", type=float, default=330.0, help="client timeout per request")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deploy", default=str(DEPLOY))
    args = ap.parse_args()
    deploy = yaml.safe_load(Path(args.deploy).read_text())
    args.records_kept = deploy.get("records_kept", Deploy.model_fields["records_kept"].default)
    model = next(iter(deploy["models"]))
    served = deploy["models"][model].get("served_model") or model
    with tempfile.TemporaryDirectory(prefix="cato-soak-") as tmp:
        port = free_port()
        deploy["host"], deploy["port"] = "127.0.0.1", port
        deploy["provisioner"] = {**deploy["provisioner"], "log_dir": tmp}
        path = Path(tmp) / "deploy.yaml"
        path.write_text(yaml.safe_dump(deploy, sort_keys=False))
        log_path = Path(tmp) / "gateway.log"
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "w") as log:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "cato_live", "serve", str(path), "--log-level", "warning"],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            t0 = time.monotonic()
            while True:
                if gateway.poll() is not None:
                    raise SystemExit(f"the gateway exited ({gateway.returncode}):\n{log_path.read_text()[-3000:]}")
                try:
                    with urlopen(url + "/health", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() - t0 > 180:
                    raise SystemExit(f"the gateway did not come up in 180 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
            print(
                f"gateway {url} (pid {gateway.pid}) up in {time.monotonic() - t0:.1f} s with {args.deploy}; "
                f"{args.rate:g} requests/s Poisson for {args.minutes} min; {args.prompt_tokens}-token prompts, "
                f"{args.max_tokens} output tokens, task type completion"
            )
            asyncio.run(soak(args, url, served, gateway.pid))
        finally:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
            warnings = [ln for ln in log_path.read_text().splitlines() if " WARNING " in ln or " ERROR " in ln]
            if warnings:
                print(f"gateway log: {len(warnings)} warning/error lines; the last ones:")
                for ln in warnings[-5:]:
                    print("  " + ln[:300])


if __name__ == "__main__":
    main()
