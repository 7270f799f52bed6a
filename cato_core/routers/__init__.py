"""Routers, chosen by name in an experiment's YAML (``router: cato | round_robin | pow2``)."""

from __future__ import annotations

from typing import Any

from cato_core.routers.base import AT_RISK, ON_TIME, VIOLATED, Retry, Route, Router
from cato_core.routers.cato import CatoRouter, CatoRouterParams
from cato_core.routers.pow2 import Pow2Params, Pow2Router
from cato_core.routers.round_robin import RoundRobinParams, RoundRobinRouter

ROUTERS = {
    "cato": (CatoRouter, CatoRouterParams),
    "round_robin": (RoundRobinRouter, RoundRobinParams),
    "pow2": (Pow2Router, Pow2Params),
}


def make_router(name: str, params: dict[str, Any] | None = None, seed: int = 0) -> Router:
    cls, params_cls = ROUTERS[name]
    return cls(params_cls.model_validate(params or {}), seed=seed)


__all__ = ["ROUTERS", "make_router", "Route", "Retry", "Router", "VIOLATED", "AT_RISK", "ON_TIME"]
