from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cato_core.errors import InputError
from cato_core.profile import DeviceProfile, load_profile, shipped_profiles
from cato_profiles.fit import (
    A100_80GB,
    ASCEND_910B4,
    CODELLAMA_7B,
    STARCODER2_7B,
    MeasuredSteps,
    attention_coefficients,
    build_shipped_profiles,
    fit_floored_linear,
    fit_linear,
    fit_measured_profile,
    fit_step_times,
    fit_vidur_profile,
    kv_capacity_tokens,
    port_profile,
    read_vidur_mlp,
    write_profile,
)

ROOT = Path(__file__).resolve().parents[1]
A100_CSV = ROOT / "data/profiles/vidur_llama2_7b/a100/mlp.csv"


def synthetic_csv(path, tp_rows=(1, 2)):
    """Per-layer ops linear in T (ms): emb 0.5, up 0.1+0.002T, add 0.05+0.0001T.

    32 layers: 0.5 + 32*(0.15 + 0.0021 T) ms = 5.3 ms + 0.0672 ms * T.
    """
    t = np.array([1, 8, 64, 512, 4096], float)
    rows = []
    for tp in tp_rows:
        rows.append(
            pd.DataFrame(
                {
                    "time_stats.emb.median": 0.5,
                    "time_stats.emb.mean": 99.0,
                    "time_stats.mlp_up_proj.median": (0.1 + 0.002 * t) / tp,
                    "time_stats.add.median": 0.05 + 0.0001 * t,
                    "n_embd": 4096,
                    "num_tokens": t,
                    "num_tensor_parallel_workers": tp,
                }
            )
        )
    pd.concat(rows).to_csv(path, index=False)
    return path


def test_fit_recovers_known_line(tmp_path):
    csv = synthetic_csv(tmp_path / "mlp.csv")
    t, y = read_vidur_mlp(csv, n_layers=32)
    assert list(t) == [1, 8, 64, 512, 4096]  # TP2 rows ignored, .mean columns ignored
    fit = fit_linear(t, y)
    assert fit.overhead_s == pytest.approx(5.3e-3, rel=1e-9)
    assert fit.per_token_s == pytest.approx(6.72e-5, rel=1e-9)
    assert fit.max_rel < 1e-9
    # a line needs no floor: the floored fit falls back to the line fitted to all rows
    assert fit_floored_linear(t, y) == fit
    prof = fit_vidur_profile(csv, name="x", model="m", device="d")
    assert prof.overhead_s == pytest.approx(5.3e-3, rel=1e-6)  # stored to 6 digits
    assert prof.per_token_s == pytest.approx(6.72e-5, rel=1e-6)
    assert prof.linear_floor_s == 0.0 and "no floor" in prof.provenance


def test_floored_fit_recovers_known_floor_and_line():
    # 9 ms floor, 4 ms + 0.05 ms/token line: they meet at T = 100
    t = np.array([1, 2, 8, 32, 64, 128, 256, 1024, 4096], float)
    y = np.maximum(9e-3, 4e-3 + 5e-5 * t)
    fit = fit_floored_linear(t, y)
    assert fit.floor_s == pytest.approx(9e-3, rel=1e-12) and fit.floor_rows == 5
    assert fit.overhead_s == pytest.approx(4e-3, rel=1e-9)
    assert fit.per_token_s == pytest.approx(5e-5, rel=1e-9)
    assert fit.max_rel < 1e-9 and fit.n_points == 9  # residuals over all rows
    plain = fit_linear(t, y)
    assert plain.max_rel > 0.2 and plain.rms_rel > 0.1  # a line alone fits it badly
    # too few rows above T = 64 to fit a line: no floor
    assert fit_floored_linear(t[:6], y[:6]).floor_s == 0.0


def test_shipped_a100_small_steps_match_vidur():
    """The floor fixes the line's under-prediction of decode-sized steps (up to 30%)."""
    prof = load_profile("codellama-7b_a100")
    t, y = read_vidur_mlp(A100_CSV, n_layers=32, d_model=4096)
    small = t <= 64
    model = np.array([prof.linear_s(int(n)) for n in t])
    rel = np.abs(model - y) / y
    assert rel[small].max() < 0.06
    assert np.sqrt(np.mean(rel**2)) < 0.06
    assert prof.linear_floor_s == pytest.approx(np.median(y[small]), rel=1e-5)
    line = prof.overhead_s + prof.per_token_s * t
    assert (line[small] < prof.linear_floor_s).all() and (line[t >= 80] > prof.linear_floor_s).all()


def test_attention_and_kv_constants_by_hand():
    assert CODELLAMA_7B.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2 == 524288  # 0.5 MiB
    assert CODELLAMA_7B.attn_flops_per_a == 2 * 32 * 4096 == 262144
    attn, ctx = attention_coefficients(CODELLAMA_7B, A100_80GB)
    assert attn == pytest.approx(262144 / (312e12 * 0.5), rel=1e-12)
    assert ctx == pytest.approx(524288 / (2.0e12 * 0.7), rel=1e-12)
    # (80 GiB * 0.9 - 13.48 GB) / 0.5 MiB = 63_829_411_328 / 524_288 = 121744.6
    assert kv_capacity_tokens(CODELLAMA_7B, A100_80GB) == 121744
    assert STARCODER2_7B.kv_bytes_per_token == 2 * 32 * 4 * 128 * 2 == 65536
    assert STARCODER2_7B.attn_flops_per_a == 2 * 32 * 36 * 128 == 294912


def test_shipped_a100_prefill_matches_vidur_plus_attention():
    prof = load_profile("codellama-7b_a100")
    assert not prof.estimate and prof.kv_capacity_tokens == 121744
    df = pd.read_csv(A100_CSV)
    row = df[(df.num_tokens == 1000) & (df.num_tensor_parallel_workers == 1)].iloc[0]
    per_layer = [c for c in df.columns if c.endswith(".median") and c != "time_stats.emb.median"]
    vidur_s = (row[per_layer].sum() * 32 + row["time_stats.emb.median"]) / 1e3
    expected = vidur_s + 1000**2 * 262144 / 156e12
    assert prof.prefill_s(1000) == pytest.approx(expected, rel=0.15)


def test_shipped_profiles_load_and_estimates_are_marked():
    assert {"codellama-7b_a100", "codellama-7b_910b4", "starcoder2-7b_910b4"} <= set(shipped_profiles())
    for name in ["codellama-7b_910b4", "starcoder2-7b_910b4"]:
        prof = load_profile(name)
        assert prof.estimate and "ESTIMATE" in prof.provenance
    assert load_profile("starcoder2-7b_910b4").decode_ctx_s == pytest.approx(
        load_profile("codellama-7b_910b4").decode_ctx_s / 8, rel=1e-5
    )  # GQA: 4 vs 32 KV heads


def test_port_to_same_device_and_model_is_identity():
    base = load_profile("codellama-7b_a100")
    same = port_profile(
        base,
        name="s",
        model="m",
        device="d",
        base_arch=CODELLAMA_7B,
        arch=CODELLAMA_7B,
        base_spec=A100_80GB,
        spec=A100_80GB,
        cold_start_s=1.0,
        cold_start_basis="test",
    )
    for f in ["overhead_s", "per_token_s", "linear_floor_s", "prefill_attn_s", "decode_ctx_s", "kv_capacity_tokens"]:
        assert getattr(same, f) == getattr(base, f)


def test_port_scales_floor_by_weight_bytes_over_bandwidth():
    base = load_profile("codellama-7b_a100")
    for name, arch in [("codellama-7b_910b4", CODELLAMA_7B), ("starcoder2-7b_910b4", STARCODER2_7B)]:
        ported = load_profile(name)
        # 910B4: 0.8 vs 2.0 TB/s at equal efficiency: 2.5x the weight-read time, x params
        ratio = (arch.weight_bytes / ASCEND_910B4.achieved_bandwidth) / (
            CODELLAMA_7B.weight_bytes / A100_80GB.achieved_bandwidth
        )
        assert ported.linear_floor_s == pytest.approx(base.linear_floor_s * ratio, rel=1e-5)
        assert "linear_floor_s" in ported.provenance


def test_missing_column_and_file_raise_input_error(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.read_csv(synthetic_csv(tmp_path / "ok.csv")).drop(columns="num_tokens").to_csv(bad)
    with pytest.raises(InputError) as e:
        fit_vidur_profile(bad, name="x", model="m", device="d")
    assert e.value.field == "num_tokens"
    with pytest.raises(InputError):
        fit_vidur_profile(tmp_path / "nope.csv", name="x", model="m", device="d")
    with pytest.raises(InputError) as e:
        fit_vidur_profile(tmp_path / "ok.csv", name="x", model="m", device="d", tensor_parallel=8)
    assert e.value.field == "num_tensor_parallel_workers"


def test_cli_writes_loadable_profile_and_reports_bad_input(tmp_path, capsys):
    from typer.testing import CliRunner

    from cato_sim.cli import app

    out = tmp_path / "p.yaml"
    ok = CliRunner().invoke(app, ["profile", "fit", str(A100_CSV), "--out", str(out), "--name", "p"])
    assert ok.exit_code == 0, ok.output
    assert load_profile(out).overhead_s == load_profile("codellama-7b_a100").overhead_s
    bad = CliRunner().invoke(app, ["profile", "fit", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert bad.exit_code == 2
    assert "nope.csv" in bad.output and "Traceback" not in bad.output


def test_regeneration_is_byte_identical(tmp_path):
    written = build_shipped_profiles(ROOT / "data", tmp_path)
    shipped = ROOT / "cato_profiles"
    # the others are measured on a device by `cato-live profile`: nothing here regenerates them
    measured = sorted(p.name for p in shipped.glob("*.yaml") if "cato-live profile" in p.read_text())
    assert sorted(p.name for p in written) == sorted(p.name for p in shipped.glob("*.yaml") if p.name not in measured)
    for p in written:
        assert p.read_bytes() == (shipped / p.name).read_bytes(), p.name
        assert yaml.safe_load(p.read_text())["name"] == p.stem


# A profile with every term: its floor meets its line at T = 64, where the fit splits them.
TRUE = DeviceProfile(
    name="t",
    model="m",
    device="d",
    overhead_s=3e-3 - 64 * 2e-5,
    per_token_s=2e-5,
    linear_floor_s=3e-3,
    per_seq_s=3e-4,
    prefill_attn_s=4e-9,
    decode_ctx_s=5e-8,
    request_latency_s=6e-3,
    kv_capacity_tokens=10_000,
    cold_start_s=1.0,
)


def synthetic_steps(prof: DeviceProfile) -> MeasuredSteps:
    """The grid cato-live profile measures, timed by ``prof`` itself."""
    part, t, a, c, s, y = [], [], [], [], [], []
    for p in (16, 64, 128, 256, 512, 1024, 1536):  # lone prompts: TTFT
        part.append("prefill"), t.append(p), a.append(p * p), c.append(0.0), s.append(1), y.append(prof.prefill_s(p))
    for n in (1, 2, 4, 8):  # decode batches
        for ctx in (16, 512, 1024):
            held = n * (ctx + 16.5)
            part.append("decode"), t.append(n), a.append(0.0), c.append(held), s.append(n)
            y.append(prof.step_s(n, 0, held, n))
    for n in (1, 4, 7):  # a prompt prefilled with n decoders
        for p in (64, 256, 1024):
            held = n * 70.0
            part.append("mixed"), t.append(n + p), a.append(p * p), c.append(held), s.append(n + 1)
            y.append(prof.step_s(n + p, p * p, held, n + 1))
    return MeasuredSteps(part, t, a, c, s, y)


def test_measured_fit_recovers_known_coefficients():
    steps = synthetic_steps(TRUE)
    fit = fit_step_times(*steps.arrays())
    assert fit.floored_jointly
    for got, want in [
        (fit.linear.floor_s, TRUE.linear_floor_s),
        (fit.linear.overhead_s, TRUE.overhead_s),
        (fit.linear.per_token_s, TRUE.per_token_s),
        (fit.prefill_attn_s, TRUE.prefill_attn_s),
        (fit.decode_ctx_s, TRUE.decode_ctx_s),
        (fit.per_seq_s, TRUE.per_seq_s),
        (fit.request_latency_s, TRUE.request_latency_s),
    ]:
        assert got == pytest.approx(want, rel=1e-9)
    # a form without the per-sequence term cannot follow decode steps that grow 0.32 ms a sequence
    assert fit_step_times(*steps.arrays(), per_seq=False).per_seq_s == 0.0
    # without a latency term the same data fit worse
    bare = fit_step_times(*steps.arrays(), request_latency=False)
    assert bare.request_latency_s == 0.0


def test_measured_profile_round_trips_and_reports_residuals(tmp_path):
    prof = fit_measured_profile(
        synthetic_steps(TRUE),
        name="tiny_cpu",
        model="m",
        device="d",
        kv_capacity_tokens=10_000,
        cold_start_s=31.24,
        cold_start_basis="measured: 31.2 s",
        basis=["Measured on a test."],
    )
    assert not prof.estimate and prof.cold_start_s == 31.2
    fields = ["overhead_s", "per_token_s", "linear_floor_s", "per_seq_s", "prefill_attn_s", "decode_ctx_s"]
    for f in [*fields, "request_latency_s"]:
        assert getattr(prof, f) == pytest.approx(getattr(TRUE, f), rel=1e-5), f  # stored to 6 digits
    assert "prefill rms 0.0%" in prof.provenance and "mixed rms 0.0%" in prof.provenance
    assert "The form without it fits" in prof.provenance
    out = write_profile(prof, tmp_path / "p.yaml", generated_by="cato-live profile")
    assert load_profile(out) == prof
    assert "request_latency_s" in out.read_text() and "cato-live profile" in out.read_text()
    assert "per_seq_s: 0.0003" in out.read_text() and "+ per_seq_s*S" in out.read_text()
    assert "per_seq_s: 0.300 ms a sequence" in prof.provenance


def test_profiles_without_request_latency_are_written_as_before(tmp_path):
    base = load_profile("codellama-7b_a100")
    assert base.request_latency_s == 0.0
    text = write_profile(base, tmp_path / "a.yaml").read_text()
    assert "request_latency_s" not in text and "per_seq_s" not in text
    assert text == (ROOT / "cato_profiles/codellama-7b_a100.yaml").read_text()
