"""The README's `$ cato-sim ...` examples run as written, so they never rot."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def examples(prog: str) -> list[str]:
    return [
        line.strip()[2:]
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.strip().startswith(f"$ {prog} ")
    ]


@pytest.mark.parametrize("command", examples("cato-sim") + examples("cato-live"))
def test_readme_example_runs(tmp_path, command):
    for folder in ("experiments", "traces", "data"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    argv = shlex.split(command)
    module = {"cato-sim": "cato_sim", "cato-live": "cato_live"}[argv[0]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the checkout, installed or not
    proc = subprocess.run(
        [sys.executable, "-m", module, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert any((tmp_path / "results").iterdir())


def test_readme_has_examples():
    assert len(examples("cato-sim")) >= 4 and len(examples("cato-live")) >= 1
