"""`cato-sim explore`: the slowdown transform, capacity, the gain arithmetic, and a tiny map."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cato_core.profile import load_profile
from cato_core.profile_speed import slowed, time_fields
from cato_report.explore_gain import best_baselines, gain_table, region
from cato_sim.cli import app
from cato_sim.experiment import load_experiment
from cato_sim.explore import AXES, make_grid, run_explore

EXPERIMENT = {
    "name": "tiny",
    "seed": 3,
    "trace": {"generate": {"rate": 2.0, "duration_s": 5}},
    "models": {"codellama-7b": {"profile": "codellama-7b_910b4", "replicas": 2, "max_num_seqs": 4}},
    "setups": [{"name": "cato", "router": "cato", "scaler": "fixed"}],
}
TINY = ["--load", "0.5,1.1", "--sla", "1.5,3", "--cv", "1,4", "--slowdown", "1,2"]


def test_slowdown_scales_every_duration_and_nothing_else():
    p = load_profile("codellama-7b_910b4")
    s = slowed(p, 4.0)
    assert {"overhead_s", "per_token_s", "prefill_attn_s", "decode_ctx_s", "cold_start_s"} <= set(time_fields(p))
    for name in (f.name for f in dataclasses.fields(p)):
        if name in time_fields(p):
            assert getattr(s, name) == getattr(p, name) * 4.0
        elif name not in ("name", "provenance"):
            assert getattr(s, name) == getattr(p, name)
    # a power of two scales floats exactly: every step takes exactly 4x as long
    for tokens, attn, ctx in [(1, 0, 100), (512, 512**2, 0), (300, 10_000, 5_000)]:
        assert s.step_s(tokens, attn, ctx, 3) == 4.0 * p.step_s(tokens, attn, ctx, 3)
    assert slowed(p, 1.0) is p
    with pytest.raises(ValueError, match="> 0"):
        slowed(p, 0.0)


def frame(goodput: dict[str, list[float]], replica_seconds: dict[str, float] | None = None, point="p") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "point": point,
                **dict.fromkeys(AXES, 1.0),
                "rate": 2.0,
                "policy": policy,
                "seed": seed,
                "goodput_rate": g,
                "replica_seconds": (replica_seconds or {}).get(policy, 100.0),
            }
            for policy, values in goodput.items()
            for seed, g in enumerate(values)
        ]
    )


def test_best_baseline_and_gain_interval_on_a_hand_made_frame():
    f = frame({"cato": [0.9, 0.8, 0.7], "rayserve": [0.6, 0.6, 0.6], "round_robin": [0.7, 0.8, 0.6]})
    assert best_baselines(f)["p"] == "round_robin"  # mean 0.7 over Ray's 0.6
    g = gain_table(f).iloc[0]
    # per seed: +0.2, 0.0, +0.1 -> mean 0.1, sd 0.1, half-width t(2) 4.303 * 0.1 / sqrt(3)
    half = 4.303 * 0.1 / 3**0.5
    assert (g["best_baseline"], g["n"]) == ("round_robin", 3)
    assert (
        g["gain"] == pytest.approx(0.1)
        and g["lo"] == pytest.approx(0.1 - half)
        and g["hi"] == pytest.approx(0.1 + half)
    )
    # a tie on Goodput goes to the fewer replica-seconds, then to the frame's order
    tie = frame({"cato": [1, 1], "a": [1, 1], "b": [1, 1]}, {"a": 120.0, "b": 90.0})
    assert best_baselines(tie)["p"] == "b"
    assert best_baselines(frame({"cato": [1, 1], "a": [1, 1], "b": [1, 1]}))["p"] == "a"
    one = gain_table(frame({"cato": [0.5], "a": [0.25]})).iloc[0]
    assert (one["gain"], one["lo"], one["hi"], one["n"]) == (0.25, 0.25, 0.25, 1)


def test_region_is_the_box_of_the_points_that_hold():
    pts = pd.DataFrame([{"load": x, "sla": s, "cv": 1.0, "slowdown": 1.0} for x in (0.3, 0.9, 1.1) for s in (1.2, 3.0)])
    holds = (pts["load"] >= 0.9) & (pts["sla"] == 1.2)
    assert region(pts, holds) == "load >= 0.9 and SLA = 1.2x (2 of 2 map points there)"
    assert region(pts, pts["load"] > 5) == "nowhere on the map"
    assert region(pts, pts["load"] > 0).startswith("everywhere")


def test_grid_pairs_around_the_base():
    grid = make_grid({"load": "0.5,1.1", "sla": "1.5,3", "cv": "poisson,4", "slowdown": "1"})
    assert grid.pairs == (("load", "sla"), ("load", "cv"), ("sla", "cv"))
    assert grid.base == {"load": 1.1, "sla": 3.0, "cv": 1.0, "slowdown": 1.0}
    assert len(grid.points()) == 7  # 3 maps of 4 around one shared base, lines shared


@pytest.fixture
def exp_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    return path


def test_explore_end_to_end_is_deterministic(exp_file, tmp_path):
    out = tmp_path / "a"
    args = ["explore", str(exp_file), *TINY, "--seeds", "2", "--tasks", "12", "--workers", "2", "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--policies", "cato,round_robin,rayserve_llm"])
    assert res.exit_code == 0, res.output
    f = pd.read_parquet(out / "explore.parquet")
    assert len(f) == 11 * 3 * 2 and not f.duplicated(["point", "policy", "seed"]).any()
    assert set(f["slowdown"]) == {1.0, 2.0} and set(f["cv"]) == {1.0, 4.0}
    # load is on the measured capacity of each device speed: half the rate at twice the slowness
    caps = f.groupby("slowdown")["capacity"].first()
    assert caps[2.0] == pytest.approx(caps[1.0] / 2, rel=0.02)
    assert (f["rate"] == f["load"] * f["capacity"]).all()
    assert "strongest baseline" in (out / "gain.md").read_text()
    assert len(list((out / "plots").glob("gain_*.png"))) == 6
    assert "Goodput rate gain" in res.output
    # the same plan in one process, run again: a byte-identical table
    exp, base = load_experiment(exp_file)
    grid = make_grid({"load": "0.5,1.1", "sla": "1.5,3", "cv": "1,4", "slowdown": "1,2"})
    run_explore(exp, base, tmp_path / "b", grid, ["cato", "round_robin", "rayserve_llm"], 2, 12, workers=1)
    assert (tmp_path / "b" / "explore.parquet").read_bytes() == (out / "explore.parquet").read_bytes()
    # resumed: nothing left to run, the same table
    before = (out / "explore.parquet").read_bytes()
    res = CliRunner().invoke(app, [*args, "--policies", "cato,round_robin,rayserve_llm", "--resume", "--no-plots"])
    assert res.exit_code == 0 and (out / "explore.parquet").read_bytes() == before
