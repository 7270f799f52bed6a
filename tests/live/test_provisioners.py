"""The ray provisioner on a local Ray instance: one real vLLM replica as a Ray actor holding a
custom accelerator resource, one call through the gateway, and nothing left after it stops.

(The process provisioner is exercised in test_gateway.py and test_gateway_process.py.)
"""

from __future__ import annotations

import os
import time

import httpx
import pytest

from cato_live.background import serve_in_thread
from cato_live.deploy import parse_deploy
from cato_live.gateway.app import create_app

from .conftest import ROOT, SERVED_NAME
from .test_gateway import TINY_CPU

pytestmark = pytest.mark.live


@pytest.fixture
def local_ray(monkeypatch):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'cato[ray]')")
    import ray._private.ray_constants as ray_constants

    # Keep all of Ray's traffic on loopback: on Linux it binds the machine's network address
    # and turns 127.0.0.1 into it, unless told this is a single-machine instance (read at
    # import: the constant for this process, the variable for Ray's own processes).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(
        num_cpus=2,
        resources={"cpu_slot": 2},
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
    try:
        yield ray
    finally:
        ray.shutdown()


def test_ray_provisioner_serves_one_replica_and_stops_it(local_ray, vllm_python, tiny_model_dir):
    ray = local_ray
    deploy = parse_deploy(
        {
            "router": "cato",
            "default_task_type": "generation",
            "models": {
                "tiny": {
                    "profile": TINY_CPU,
                    "served_model": SERVED_NAME,
                    "replicas": 1,
                    "max_num_seqs": 4,
                    "priority_scheduling": True,
                }
            },
            "provisioner": {
                "kind": "ray",
                "resources": {"cpu_slot": 1},
                "num_cpus": 0,
                "cpu_cores": [0],
                "python": vllm_python,
                "ready_timeout_s": float(os.environ.get("CATO_VLLM_READY_TIMEOUT", "180")),
                "models": {"tiny": {"path": tiny_model_dir}},
            },
        },
        "live",
    )
    with serve_in_thread(create_app(deploy)) as url:
        (row,) = httpx.get(url + "/v1/cato/replicas").json()["replicas"]
        assert row["replica_id"] == "tiny-1" and row["state"] == "ready" and row["machine"] == 0
        assert row["url"].startswith("http://127.0.0.1:") and row["meta"]["actor"] == "cato-tiny-1"
        pid = row["meta"]["pid"]
        assert ray.get_actor("cato-tiny-1") is not None
        assert ray.available_resources().get("cpu_slot") == 1.0  # the replica holds one slot
        with open(f"/proc/{pid}/environ", "rb") as fh:
            assert b"VLLM_CPU_OMP_THREADS_BIND=0" in fh.read().split(b"\0")
        r = httpx.post(
            url + "/v1/completions",
            timeout=60,
            json={"model": "tiny", "prompt": list(range(10, 42)), "max_tokens": 8, "ignore_eos": True},
        )
        assert r.status_code == 200 and r.headers["x-cato-replica"] == "tiny-1"
        assert r.json()["usage"] == {
            "prompt_tokens": 32,
            "completion_tokens": 8,
            "total_tokens": 40,
            **{
                k: v
                for k, v in r.json()["usage"].items()
                if k not in ("prompt_tokens", "completion_tokens", "total_tokens")
            },
        }
    # Gateway shutdown stopped the server and killed the actor.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ValueError, match="Failed to look up actor with name 'cato-tiny-1'"):
        ray.get_actor("cato-tiny-1")
    end = time.monotonic() + 20
    while ray.available_resources().get("cpu_slot") != 2.0 and time.monotonic() < end:
        time.sleep(0.2)  # Ray frees a killed actor's resources asynchronously
    assert ray.available_resources().get("cpu_slot") == 2.0
