"""notebooks/goodput_curves.ipynb runs top to bottom on a tiny sweep (nbclient; any failing cell fails).

The kernel is this interpreter: the test writes its own kernelspec (argv = sys.executable)
into a temporary JUPYTER_PATH, so a `python3` kernel of another environment is never used.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed (pip install '.[notebooks]')")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed (pip install '.[notebooks]')")
pytest.importorskip("ipykernel", reason="the notebooks extra is not installed (pip install '.[notebooks]')")

from cato_sim.experiment import load_experiment  # noqa: E402
from cato_sim.sweep import run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "goodput_curves.ipynb"
KERNEL = "cato-test-python"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "CATO test (this interpreter)",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # the kernel starts in notebooks/: make the checkout importable even when not installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return KERNEL


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """2 rates x 2 policies x 2 seeds of a 10 s quickstart."""
    exp, base = load_experiment(ROOT / "experiments" / "quickstart.yaml", ["trace.generate.duration_s=10"])
    out = tmp_path / "sweep"
    result = run_sweep(exp, base, out, ["cato", "round_robin"], [1.0, 3.0], 2, workers=1)
    assert result.failures == [] and len(result.frame) == 2 * 2 * 2 * 4
    return out


def test_goodput_curves_notebook_runs(kernel, sweep_dir, monkeypatch):
    monkeypatch.setenv("CATO_SWEEP_DIR", str(sweep_dir))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # goodput, P95 latency, utilization, replicas
    text = "".join(o.get("text", "") for o in outputs)
    assert "8 runs = 2 policies x 2 rates x 2 seeds" in text
    assert (sweep_dir / "plots" / "goodput_vs_rate.png").is_file()


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
