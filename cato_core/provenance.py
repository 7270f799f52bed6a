"""What a run records about the software that made it, beside its results."""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable
from importlib import metadata


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Python's version and each installed package's ("not installed" when absent)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in packages}}


@functools.cache
def _version(name: str) -> str:
    """Looked up once a process: a lookup scans the environment's metadata, and runs ask often."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
