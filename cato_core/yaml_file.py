"""Reading a user's YAML file (an experiment, a DEPLOY.yaml), with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cato_core.errors import InputError


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed file; InputError naming the file and ``what`` it should be, or the bad line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), what, "an existing YAML file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise InputError(str(path), where, "well-formed YAML") from None
