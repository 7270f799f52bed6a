"""bench/live_ab.py end to end: CATO's gateway and the real Ray Serve LLM stack (ray.serve.llm
2.60 on vLLM's CPU build) replay one small trace on one replica each, both simulated beside.

Checked: the table has a live / simulated row per task type for both sides; every task is
in each side's live tasks.parquet once with a status; the Ray side's calls went to Ray's
HTTP proxy (not the gateway) and the Ray app really served them; nothing of Ray is left
running afterwards. Needs CATO_VLLM_PYTHON with ray[serve] (`make ray-serve-llm`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import psutil
import pyarrow.parquet as pq
import pytest

from cato_live.provisioners.child_process import free_port

from .conftest import ROOT

pytestmark = pytest.mark.live
SIDES = ("cato", "rayserve_llm")


def ray_processes() -> list[str]:
    titles = []
    for p in psutil.process_iter(["cmdline"]):
        title = " ".join(p.info["cmdline"] or ())
        if title.startswith("ray::") or "ray_serve_llm.py" in title:
            titles.append(title)
    return titles


@pytest.fixture(scope="module")
def ab(vllm_python, tiny_model_dir, tmp_path_factory):
    has_ray = subprocess.run([vllm_python, "-c", "import ray.serve.llm"], capture_output=True, check=False)
    if has_ray.returncode != 0:
        pytest.fail(f"{vllm_python} has no ray.serve.llm: run `make ray-serve-llm`")
    out = tmp_path_factory.mktemp("live_ab")
    cmd = [sys.executable, str(ROOT / "bench/live_ab.py"), "--sides", ",".join(SIDES), "--out", str(out)]
    cmd += ["--capacity", "4", "--loads", "1", "--seconds", "6", "--max-prompt", "64", "--max-output", "16"]
    cmd += ["--ray-port", str(free_port("127.0.0.1"))]
    env = {**os.environ, "CATO_VLLM_PYTHON": vllm_python, "CATO_TINY_MODEL": tiny_model_dir, "COLUMNS": "200"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "load-1/round-1"


def test_table_has_live_and_sim_per_task_type_for_each_side(ab):
    folder = ab
    types = set(pq.read_table(folder / "trace.parquet", columns=["task_type"])["task_type"].to_pylist())
    table = (folder.parents[1] / "table.md").read_text()
    cell = r"(\d+\.\d% / \d+\.\d%)( \| (\d+|-) / (\d+|-)){4}"
    for t in ["all", *types]:
        for side in SIDES:
            assert re.search(rf"^\| {t} \| {side} \| {cell} \|$", table, re.M), (t, side, table)
    assert "strongest baseline rayserve_llm" in table


def test_every_task_once_on_each_side_and_ray_served_its_side(ab):
    folder = ab
    ids = sorted(pq.read_table(folder / "trace.parquet", columns=["task_id"])["task_id"].to_pylist())
    for side in SIDES:
        for run in ("sim", "live"):
            tasks = pq.read_table(folder / side / "out" / run / "tasks.parquet", columns=["task_id", "status"])
            assert sorted(tasks["task_id"].to_pylist()) == ids
            assert None not in tasks["status"].to_pylist()
    target = json.loads((folder / "rayserve_llm/out/live/summary.json").read_text())["config"]["target"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", target)
    inputs = {s: json.loads((folder / s / "out/fidelity.json").read_text())["inputs"] for s in SIDES}
    assert inputs["rayserve_llm"]["live target"] == target
    assert inputs["cato"]["live target"].endswith("through the CATO gateway")
    served = pq.read_table(folder / "rayserve_llm/out/live/replicas.parquet", columns=["replica_id", "requests"])
    assert served["replica_id"].to_pylist() == [target] and served["requests"].to_pylist()[0] >= len(ids)
    log = (folder / "rayserve_llm/ray.log").read_text()
    assert "Application 'default' is ready" in log


def test_nothing_of_ray_left_running(ab):
    assert ray_processes() == []
