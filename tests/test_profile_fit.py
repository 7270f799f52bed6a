from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cato_core.errors import InputError
from cato_core.profile import load_profile, shipped_profiles
from cato_core.profile_fit import (
    A100_80GB, CODELLAMA_7B, STARCODER2_7B, attention_coefficients, build_shipped_profiles,
    fit_linear, fit_vidur_profile, kv_capacity_tokens, port_profile, read_vidur_mlp,
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
        rows.append(pd.DataFrame({
            "time_stats.emb.median": 0.5, "time_stats.emb.mean": 99.0,
            "time_stats.mlp_up_proj.median": (0.1 + 0.002 * t) / tp,
            "time_stats.add.median": 0.05 + 0.0001 * t,
            "n_embd": 4096, "num_tokens": t, "num_tensor_parallel_workers": tp,
        }))
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
    prof = fit_vidur_profile(csv, name="x", model="m", device="d")
    assert prof.overhead_s == pytest.approx(5.3e-3, rel=1e-6)  # stored to 6 digits
    assert prof.per_token_s == pytest.approx(6.72e-5, rel=1e-6)


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
    per_layer = [c for c in df.columns
                 if c.endswith(".median") and c != "time_stats.emb.median"]
    vidur_s = (row[per_layer].sum() * 32 + row["time_stats.emb.median"]) / 1e3
    expected = vidur_s + 1000**2 * 262144 / 156e12
    assert prof.prefill_s(1000) == pytest.approx(expected, rel=0.15)


def test_shipped_profiles_load_and_estimates_are_marked():
    assert {"codellama-7b_a100", "codellama-7b_910b4", "starcoder2-7b_910b4"} <= set(
        shipped_profiles())
    for name in ["codellama-7b_910b4", "starcoder2-7b_910b4"]:
        prof = load_profile(name)
        assert prof.estimate and "ESTIMATE" in prof.provenance
    assert load_profile("starcoder2-7b_910b4").decode_ctx_s == pytest.approx(
        load_profile("codellama-7b_910b4").decode_ctx_s / 8, rel=1e-5)  # GQA: 4 vs 32 KV heads


def test_port_to_same_device_and_model_is_identity():
    base = load_profile("codellama-7b_a100")
    same = port_profile(base, name="s", model="m", device="d", base_arch=CODELLAMA_7B,
                        arch=CODELLAMA_7B, base_spec=A100_80GB, spec=A100_80GB,
                        cold_start_s=1.0, cold_start_basis="test")
    for f in ["overhead_s", "per_token_s", "prefill_attn_s", "decode_ctx_s",
              "kv_capacity_tokens"]:
        assert getattr(same, f) == getattr(base, f)


def test_missing_column_and_file_raise_input_error(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.read_csv(synthetic_csv(tmp_path / "ok.csv")).drop(columns="num_tokens").to_csv(bad)
    with pytest.raises(InputError) as e:
        fit_vidur_profile(bad, name="x", model="m", device="d")
    assert e.value.field == "num_tokens"
    with pytest.raises(InputError):
        fit_vidur_profile(tmp_path / "nope.csv", name="x", model="m", device="d")
    with pytest.raises(InputError) as e:
        fit_vidur_profile(tmp_path / "ok.csv", name="x", model="m", device="d",
                          tensor_parallel=8)
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
    shipped = ROOT / "cato_core/profiles"
    assert sorted(p.name for p in written) == sorted(p.name for p in shipped.glob("*.yaml"))
    for p in written:
        assert p.read_bytes() == (shipped / p.name).read_bytes(), p.name
        assert yaml.safe_load(p.read_text())["name"] == p.stem
