"""Checking a provisioner's own DEPLOY fields: one InputError line naming the field."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ValidationError

from cato_core.errors import InputError

if TYPE_CHECKING:
    from cato_live.deploy import Deploy

C = TypeVar("C", bound=BaseModel)


def provisioner_config(deploy: Deploy, cls: type[C], needs_models: bool = True) -> C:
    """Validate ``deploy.provisioner``'s fields as ``cls``; with ``needs_models``, its
    ``models`` must cover every DEPLOY model."""
    try:
        config = cls.model_validate(deploy.provisioner.options())
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(["provisioner", *(str(x) for x in err["loc"])])
        raise InputError(deploy.source, field, err["msg"].removeprefix("Value error, ")) from None
    if needs_models:
        missing = sorted(set(deploy.models) - set(config.models))
        if missing:
            raise InputError(deploy.source, "provisioner.models", f"an entry for every model; missing {missing}")
    return config


def expand(value: str, deploy: Deploy, field: str) -> str:
    """``$VAR`` / ``${VAR}`` and ``~`` expanded; an unset variable is an InputError."""
    out = os.path.expanduser(os.path.expandvars(value))
    if "$" in out:
        raise InputError(deploy.source, field, f"set environment variables in {value!r}")
    return out
