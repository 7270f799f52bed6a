"""cato_core is the policy core: importing all of it pulls in no simulator, plotting, table or HTTP package.

Run in a fresh interpreter, so what pytest or other tests imported does not count. (The import
contracts between the project's own packages are checked by `lint-imports`; see pyproject.toml.)
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import cato_core
from tests.conftest import ROOT

HEAVY = ["simpy", "matplotlib", "rich", "pandas", "aiohttp", "fastapi", "httpx", "uvicorn"]

PROBE = """
import importlib, json, sys
heavy = {heavy!r}
found = {{}}
for name in {modules!r}:
    before = {{h for h in heavy if h in sys.modules}}
    importlib.import_module(name)
    for h in heavy:
        if h in sys.modules and h not in before:
            found[h] = name
print(json.dumps(found))
"""


def core_modules() -> list[str]:
    return ["cato_core", *sorted(m.name for m in pkgutil.walk_packages(cato_core.__path__, "cato_core."))]


def test_core_modules_import_no_heavy_package():
    modules = core_modules()
    assert "cato_core.profile" in modules and "cato_core.routers.cato" in modules
    probe = PROBE.format(heavy=HEAVY, modules=modules)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    pulled = json.loads(proc.stdout)  # heavy package -> the first cato_core module that pulled it in
    by = ", ".join(f"{h} <- {m}" for h, m in sorted(pulled.items()))
    assert not pulled, f"importing cato_core pulled in {sorted(pulled)} (none of {HEAVY} may be); first by: {by}"
