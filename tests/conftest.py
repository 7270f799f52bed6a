"""Shared fixtures: a profile with round numbers, so expected times can be worked by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from cato_core.profile import DeviceProfile

ROOT = Path(__file__).resolve().parents[1]


def round_profile(**over) -> DeviceProfile:
    """step = 10 ms + 1 ms per token (+ optional attention terms); cold start 5 s."""
    fields = dict(
        name="round",
        model="m",
        device="d",
        overhead_s=0.01,
        per_token_s=0.001,
        prefill_attn_s=0.0,
        decode_ctx_s=0.0,
        kv_capacity_tokens=100_000,
        cold_start_s=5.0,
    )
    fields.update(over)
    return DeviceProfile(**fields)


@pytest.fixture
def profile_file(tmp_path):
    def write(**over) -> Path:
        p = tmp_path / "round.yaml"
        p.write_text(yaml.safe_dump(dataclasses.asdict(round_profile(**over))))
        return p

    return write
