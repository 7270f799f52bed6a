"""`--profile`: a measured profile in place of the DEPLOY's own, on both sides of a validation.

The profile is for one model (its ``model`` field). It replaces the profile of every DEPLOY
model it names, by the model's key or by its ``served_model``; with several models, the
others keep their own. It applies to the live gateway as well as to the simulator: the
router's wait estimates, the slack and the SLAs (multiples of profile baselines) then come
from the same numbers on both sides, so what differs is the engine alone. A profile that
names none of the DEPLOY's models is bad input.

A live side replayed against ``--target`` does not go through CATO's gateway, so there the
profiles' gateway_latency_s is 0 on both sides (:func:`without_gateway_latency`).
"""

from __future__ import annotations

import dataclasses

from cato_core.errors import InputError
from cato_core.profile import DeviceProfile
from cato_live.deploy import Deploy


def override_profile(deploy: Deploy, profile: DeviceProfile, source: str) -> Deploy:
    """``deploy`` with ``profile`` for the models it was made for; ``source`` names the profile file."""
    names = {m: {m, deploy.served_name(m)} for m in deploy.models}
    hits = [m for m, aliases in names.items() if profile.model in aliases]
    if not hits:
        known = sorted(set().union(*names.values()))
        raise InputError(source, "model", f"one of the DEPLOY's models {known} (got {profile.model!r})")
    models = {
        m: spec.model_copy(update={"profile": profile}) if m in hits else spec for m, spec in deploy.models.items()
    }
    return deploy.model_copy(update={"models": models})


def without_gateway_latency(deploy: Deploy) -> Deploy:
    """``deploy`` with every profile's gateway_latency_s at 0: clients reach the serving stack directly."""
    models = {
        m: spec.model_copy(update={"profile": dataclasses.replace(deploy.profile(m), gateway_latency_s=0.0)})
        for m, spec in deploy.models.items()
    }
    return deploy.model_copy(update={"models": models})
