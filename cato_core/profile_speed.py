"""A slower (or faster) device: one profile transform, used by `cato-sim explore`.

Every duration of a profile is a field named ``*_s`` (step coefficients, the request latency
and the cold start); a device ``factor`` times slower multiplies each of them by ``factor``
and leaves the rest (KV capacity, accelerators) as it is. The engine's times are linear in
these coefficients, so every step takes exactly ``factor`` times as long (up to rounding).
"""

from __future__ import annotations

import dataclasses
import math

from cato_core.profile import DeviceProfile


def time_fields(profile: DeviceProfile) -> list[str]:
    """The profile's durations: its fields named ``*_s``."""
    return [f.name for f in dataclasses.fields(profile) if f.name.endswith("_s")]


def slowed(profile: DeviceProfile, factor: float) -> DeviceProfile:
    """``profile`` on a device ``factor`` times slower (``factor`` < 1: faster)."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"slowdown factor must be > 0 (got {factor!r})")
    if factor == 1:
        return profile
    scaled = {name: getattr(profile, name) * factor for name in time_fields(profile)}
    note = f"every duration x{factor:g} (cato_core.profile_speed.slowed)"
    return dataclasses.replace(
        profile,
        **scaled,
        name=f"{profile.name}@x{factor:g}",
        provenance=f"{profile.provenance.rstrip()}\n{note}".lstrip(),
    )
