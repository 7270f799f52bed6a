"""The class of each provisioner kind (DEPLOY.yaml's ``provisioner.kind``), imported only when used.

The kinds themselves are cato_live.deploy's PROVISIONER_KINDS: the schema owns the names and
this module maps them to classes, so the import runs one way (registry to deploy).

Each kind is a class taking the whole checked Deploy (``deploy.provisioner.options()`` are
its own fields, ``deploy.models`` the models it serves); importing lazily keeps Ray and the
emulator optional, and lets a kind whose module is not written yet fail with a clear line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cato_core.errors import InputError

if TYPE_CHECKING:
    from cato_live.deploy import Deploy
    from cato_live.provisioners.base import Provisioner

# kind -> "module:Class", one entry per PROVISIONER_KINDS (tests/test_deploy.py checks both agree)
KINDS = {
    "static": "cato_live.provisioners.static:StaticProvisioner",
    "process": "cato_live.provisioners.process:ProcessProvisioner",
    "ray": "cato_live.provisioners.ray_actor:RayProvisioner",
    "emulator": "cato_live.provisioners.emulator:EmulatorProvisioner",
}


def make_provisioner(deploy: Deploy) -> Provisioner:
    """The provisioner DEPLOY asks for; InputError if its module or a package it needs is missing."""
    kind = deploy.provisioner.kind
    module, cls = KINDS[kind].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = "its module " + module if e.name == module else f"the {e.name!r} package"
        raise InputError(deploy.source, "provisioner.kind", f"{kind!r} needs {missing} installed") from None
    return getattr(mod, cls)(deploy)
