"""Scalers, chosen by name in an experiment's YAML (``scaler: cato | rayserve | fixed``)."""

from __future__ import annotations

from typing import Any

from cato_core.scalers.base import ScaleDecision, Scaler, active
from cato_core.scalers.cato import CatoScaler, CatoScalerParams
from cato_core.scalers.fixed import FixedParams, FixedScaler
from cato_core.scalers.rayserve import RayServeScaler, RayServeScalerParams

SCALERS = {
    "cato": (CatoScaler, CatoScalerParams),
    "rayserve": (RayServeScaler, RayServeScalerParams),
    "fixed": (FixedScaler, FixedParams),
}


def make_scaler(name: str, params: dict[str, Any] | None = None) -> Scaler:
    cls, params_cls = SCALERS[name]
    return cls(params_cls.model_validate(params or {}))


__all__ = ["SCALERS", "make_scaler", "ScaleDecision", "Scaler", "active"]
