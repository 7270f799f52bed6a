"""What the live benches share: traces the tiny model can serve, DEPLOY files for given
cores, `cato-live` runs, and the replicas' capacity measured with a burst.

The tiny model serves at most 2,048 tokens, so prompts are clipped to ``max_prompt`` and
outputs to ``max_output`` tokens in every trace (the same on every side of a comparison).
Uses CATO_VLLM_PYTHON and CATO_TINY_MODEL (default: the Makefile's .vllm-venv and
.cache/tiny-model).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cato_live.provisioners.child_process import ChildProcess, ChildStartError  # noqa: E402
from cato_traces.generate import generate_trace  # noqa: E402

MIX = {"completion": 1, "generation": 1, "summarization": 1, "translation": 1}
VLLM_PYTHON = os.environ.get("CATO_VLLM_PYTHON", str(ROOT / ".vllm-venv/bin/python"))
TINY_MODEL = os.environ.get("CATO_TINY_MODEL", str(ROOT / ".cache/tiny-model"))


def clipped(table: pa.Table, max_prompt: int, max_output: int) -> pa.Table:
    """Token lengths clipped to what the tiny model serves."""
    for col, hi in (("prompt_tokens", max_prompt), ("output_tokens", max_output)):
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pc.min_element_wise(table[col], hi))
    return table


def mix_trace(rate: float, seconds: float | None, tasks: int | None, seed: int, args) -> pa.Table:
    """A Poisson mix of the four task types at ``rate`` tasks/s, for ``seconds`` or ``tasks``."""
    df = generate_trace(rate=rate, duration_s=seconds, num_tasks=tasks, mix=MIX, seed=seed)
    return clipped(pa.Table.from_pandas(df, preserve_index=False), args.max_prompt, args.max_output)


def azure_trace(rate: float, args) -> pa.Table:
    """The Azure code trace's first ``args.azure_tasks`` tasks, time-scaled to ``rate`` tasks/s."""
    with pq.ParquetFile(ROOT / "traces/azure_code.parquet") as f:
        t = f.read().slice(0, args.azure_tasks)
    arrival = np.asarray(t["arrival_s"].to_pylist())
    arrival -= arrival[0]
    scale = (len(arrival) - 1) / rate / arrival[-1]  # its mean rate becomes ``rate``
    t = t.set_column(t.schema.get_field_index("arrival_s"), "arrival_s", pa.array(arrival * scale))
    return clipped(t, args.max_prompt, args.max_output)


def deploy_file(args, folder: Path, name: str, model_fields: dict | None = None, **top) -> Path:
    """``args.deploy`` with ``args.replicas`` replicas on ``args.vllm_cores`` and its vLLM
    from CATO_VLLM_PYTHON / CATO_TINY_MODEL, written to folder/deploy-<name>.yaml; ``top``
    replaces top-level fields (``router="round_robin"``; a ``None`` removes the field) and
    ``model_fields`` fields of every model."""
    d = yaml.safe_load(Path(args.deploy).read_text())
    for key, value in top.items():
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value
    for spec in d["models"].values():
        spec.update(model_fields or {})
        spec["replicas"] = args.replicas
    d["provisioner"]["devices"] = args.vllm_cores
    d["provisioner"]["python"] = VLLM_PYTHON
    d["provisioner"]["log_dir"] = str(folder / "vllm-logs")
    for spec in d["provisioner"].get("models", {}).values():
        spec["path"] = TINY_MODEL
    path = folder / f"deploy-{name}.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def cato_live(*args) -> None:
    """`cato-live ARGS` in a child process; a failure ends the bench with its command line."""
    cmd = [sys.executable, "-m", "cato_live", *map(str, args)]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")


def measure_capacity(args, out: Path) -> float:
    """Tasks/s the replicas complete when a burst of ``args.burst`` tasks of the mix arrives
    at once, through the CATO gateway: tasks / makespan."""
    folder = out / "capacity"
    folder.mkdir(parents=True, exist_ok=True)
    burst = mix_trace(1e6, None, args.burst, 1, args)  # all within microseconds
    pq.write_table(burst, folder / "trace.parquet")
    deploy = deploy_file(args, folder, "cato", router="cato")
    cato_live("replay", folder / "trace.parquet", "--deploy", deploy, "--out", folder / "run")
    with pq.ParquetFile(folder / "run/tasks.parquet") as f:
        t = f.read(columns=["arrival_s", "e2e_s", "status"])
    ok = [a + e for a, e, s in zip(*(t[c].to_pylist() for c in t.column_names), strict=True) if s == "ok"]
    makespan = max(ok) - min(t["arrival_s"].to_pylist())
    return len(ok) / makespan


@contextlib.contextmanager
def gateway_process(deploy: Path, port: int, log: Path, ready_timeout_s: float = 300.0):
    """`cato-live serve DEPLOY` in a process of its own (its replicas start first); yields its
    URL once /health answers, stops it (SIGTERM: it stops its replicas) on exit."""
    cmd = [sys.executable, "-m", "cato_live", "serve", str(deploy), "--port", str(port), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    child = ChildProcess(cmd, {**os.environ, "PYTHONPATH": str(ROOT)}, log, "gateway").start()
    try:
        try:
            child.wait_ready(url + "/health", ready_timeout_s)
        except ChildStartError as e:
            raise SystemExit(f"the gateway did not start: {e}") from None
        yield url
    finally:
        child.stop(grace_s=60)  # the replicas' own stop takes seconds
