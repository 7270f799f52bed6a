"""Build device profiles from public operator timings plus first-principles attention.

Linear part max(linear_floor_s, overhead_s + per_token_s * T): fitted to Vidur's
per-operator MLP timings (microsoft/vidur, MIT), summed over the layers of the model. The
floor is the median time of the steps of at most 64 tokens (weight-read bound, flat); the
line is a least-squares fit (relative error) to the larger steps (see fit_floored_linear).
Attention, absent from Vidur's MLP data, is modelled:
  prefill: causal QK^T and AV cost 2 * n_layers * n_heads * head_dim FLOPs per unit of A
           (A = p**2 for a whole prompt), at peak fp16 FLOP/s * flops_efficiency;
  decode:  each context token's K and V are read once a step,
           2 * n_layers * n_kv_heads * head_dim * dtype_bytes bytes, at HBM bandwidth *
           bandwidth_efficiency.
KV capacity = (HBM * gpu_memory_utilization - weight bytes) / KV bytes per token.

Regenerate the shipped profiles with ``cato-sim profile build-shipped``.

Profiles measured on a device (``cato-live profile``) are fitted by fit_measured_profile
(fit_step_times): the same model plus the cost per sequence given a token (per_seq_s) and
the API path's per-request latency, from step times seen through the serving API. Operator
timings carry neither, so the Vidur-derived profiles leave both at 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cato_core.errors import InputError
from cato_core.profile import DeviceProfile

GIB = 2**30
# Steps of at most this many tokens are taken as weight-read bound (see fit_floored_linear).
FLOOR_MAX_TOKENS = 64
VIDUR_A100_CSV = "profiles/vidur_llama2_7b/a100/mlp.csv"  # relative to the data directory


@dataclass(frozen=True)
class ModelArch:
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    params: float
    dtype_bytes: int = 2  # fp16 / bf16

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def attn_flops_per_a(self) -> int:
        """FLOPs per unit of A: A/2 causal (query, key) pairs, 4 FLOPs a pair per query dim."""
        return 2 * self.n_layers * self.n_heads * self.head_dim

    @property
    def weight_bytes(self) -> float:
        return self.params * self.dtype_bytes


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    peak_flops: float  # dense fp16 tensor FLOP/s
    bandwidth: float  # HBM bytes/s
    hbm_bytes: float
    flops_efficiency: float = 0.5  # FlashAttention-2 forward reaches ~50-70% of A100 peak
    bandwidth_efficiency: float = 0.7  # Vidur's T=1 step reads the weights at ~0.73 of 2 TB/s
    basis: str = ""

    @property
    def achieved_flops(self) -> float:
        return self.peak_flops * self.flops_efficiency

    @property
    def achieved_bandwidth(self) -> float:
        return self.bandwidth * self.bandwidth_efficiency


# CodeLlama-7B has Llama-2-7B's architecture (vocabulary 32016 instead of 32000).
CODELLAMA_7B = ModelArch("CodeLlama-7B", 32, 4096, 32, 32, 128, 6.74e9)
# bigcode/starcoder2-7b config.json: GQA with 4 KV heads, so 1/8 of CodeLlama's KV a token.
STARCODER2_7B = ModelArch("StarCoder2-7B", 32, 4608, 36, 4, 128, 7.17e9)
MODELS = {"codellama-7b": CODELLAMA_7B, "llama2-7b": CODELLAMA_7B, "starcoder2-7b": STARCODER2_7B}

A100_80GB = DeviceSpec(
    "A100-80GB",
    312e12,
    2.0e12,
    80 * GIB,
    basis="NVIDIA datasheet: 312 TFLOP/s dense fp16, 1.94 (PCIe) / 2.04 (SXM) TB/s; 2.0 used",
)
H100_SXM = DeviceSpec("H100-SXM", 989e12, 3.35e12, 80 * GIB, basis="NVIDIA datasheet, dense fp16")
A40 = DeviceSpec("A40", 149.7e12, 0.696e12, 48 * GIB, basis="NVIDIA datasheet, dense fp16")
ASCEND_910B4 = DeviceSpec(
    "Ascend-910B4",
    280e12,
    0.8e12,
    32 * GIB,
    basis="ASSUMED: public figures for the 910B4 disagree; 280 TFLOP/s fp16 (figure commonly "
    "quoted for the 910B family) and 0.8 TB/s for its 32 GB HBM2e (sources range 0.4-1.6 "
    "TB/s); efficiencies assumed equal to the A100's",
)
DEVICES = {"a100": A100_80GB, "h100": H100_SXM, "a40": A40, "910b4": ASCEND_910B4}


@dataclass(frozen=True)
class LinearFit:
    overhead_s: float
    per_token_s: float
    rms_rel: float  # root mean square of (model - data) / data, model = max(floor, line)
    max_rel: float  # largest |(model - data) / data|
    max_rel_tokens: int  # T where it occurs
    n_points: int  # rows the residuals are over (all rows)
    t_min: int
    t_max: int
    floor_s: float = 0.0  # 0 = no floor
    floor_rows: int = 0  # rows the floor was taken from (the line is fitted to the others)


def read_vidur_mlp(
    csv_path: str | Path, *, n_layers: int, tensor_parallel: int = 1, d_model: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens T and seconds of one model pass without attention, per Vidur's operator medians.

    The embedding runs once per pass, every other operator once per layer.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(str(path), "file", "an existing Vidur mlp.csv")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(str(path), "csv", f"a readable CSV ({e.__class__.__name__})") from None
    ops = [c for c in df.columns if c.startswith("time_stats.") and c.endswith(".median")]
    for col in ["num_tokens", "num_tensor_parallel_workers", "n_embd", "time_stats.emb.median"]:
        if col not in df.columns:
            raise InputError(str(path), col, "a column of Vidur's mlp.csv")
    try:
        df = df[ops + ["num_tokens", "num_tensor_parallel_workers", "n_embd"]].astype(float)
    except ValueError:
        raise InputError(str(path), "time_stats.*.median", "numbers") from None
    df = df[df.num_tensor_parallel_workers == tensor_parallel].sort_values("num_tokens")
    if df.empty:
        raise InputError(str(path), "num_tensor_parallel_workers", f"rows with {tensor_parallel}")
    if d_model is not None and not (df.n_embd == d_model).all():
        raise InputError(str(path), "n_embd", f"{d_model} (the model's hidden size)")
    per_layer = [c for c in ops if c != "time_stats.emb.median"]
    ms = df[per_layer].sum(axis=1) * n_layers + df["time_stats.emb.median"]
    return df.num_tokens.to_numpy(), ms.to_numpy() / 1e3


def _residuals(t: np.ndarray, y: np.ndarray, a: float, b: float, floor: float = 0.0, floor_rows: int = 0) -> LinearFit:
    rel = (np.maximum(floor, a + b * t) - y) / y
    i = int(np.argmax(np.abs(rel)))
    return LinearFit(
        float(a),
        float(b),
        float(np.sqrt(np.mean(rel**2))),
        float(abs(rel[i])),
        int(t[i]),
        len(t),
        int(t.min()),
        int(t.max()),
        float(floor),
        floor_rows,
    )


def fit_linear(tokens: np.ndarray, seconds: np.ndarray) -> LinearFit:
    """Least-squares a + b*T minimising relative error: 1 token and 4096 tokens count alike."""
    t, y = np.asarray(tokens, float), np.asarray(seconds, float)
    w = 1 / y
    (a, b), *_ = np.linalg.lstsq(np.c_[w, t * w], np.ones_like(y), rcond=None)
    return _residuals(t, y, a, b)


def fit_floored_linear(tokens: np.ndarray, seconds: np.ndarray, floor_max_tokens: int = FLOOR_MAX_TOKENS) -> LinearFit:
    """max(floor, a + b*T): floor from the steps of T <= floor_max_tokens, line from the rest.

    A linear layer of T tokens does 2*T FLOPs per 2-byte fp16 weight it reads, i.e. T FLOPs a
    byte; below the device's ridge point (A100: 312 TFLOP/s / 2 TB/s = 156, ~110 at the
    assumed efficiencies; the 910B4's is higher) the step is bound by reading the weights and
    takes the same time whatever T. Vidur's A100 rows agree: 8.96-9.83 ms for T = 1..64, then
    11.4 ms at T = 72. The floor is the MEDIAN over T <= 64 rather than the time at the
    smallest T: it is as representative of the flat part and robust to one noisy row (the
    T = 1 row alone is a single median, and T = 2 is 3% below it). The line is fitted, by
    least relative error, to the rows above T = 64 only, so the flat rows no longer drag its
    intercept up and its slope down; it crosses the floor near T = 64 by itself (A100: 72).
    The floor is kept only if it lowers the rms relative residual over ALL rows of
    max(floor, line) below that of a line fitted to all rows, and the line's coefficients are
    not negative (data that is a line, or with too few rows either side of the split, give
    floor 0 and the plain line).
    """
    t, y = np.asarray(tokens, float), np.asarray(seconds, float)
    plain = fit_linear(t, y)
    small = t <= floor_max_tokens
    if small.sum() < 1 or (~small).sum() < 2:
        return plain
    line = fit_linear(t[~small], y[~small])
    floored = _residuals(t, y, line.overhead_s, line.per_token_s, float(np.median(y[small])), int(small.sum()))
    ok = line.overhead_s >= 0 and line.per_token_s > 0 and floored.rms_rel < plain.rms_rel
    return floored if ok else plain


@dataclass(frozen=True)
class StepFit:
    """The step model fitted to measured step times (see fit_step_times)."""

    linear: LinearFit  # max(floor, a + b*T), fitted to the times less the other terms
    prefill_attn_s: float
    decode_ctx_s: float
    per_seq_s: float  # per sequence given a token in the step (S)
    request_latency_s: float  # fixed part of a lone request's TTFT that no step accounts for
    floored_jointly: bool  # the joint fit that gave the other terms used a floor


def _rel_lstsq(x: np.ndarray, y: np.ndarray, keep: list[bool]) -> np.ndarray:
    """Coefficients minimising the relative error of x @ c against y, over the kept columns
    (the others 0); a kept column whose coefficient comes out negative is dropped and the
    rest refitted, as no term of the step model can take time away."""
    keep = list(keep)
    while True:
        coef = np.zeros(x.shape[1])
        cols = [i for i, k in enumerate(keep) if k]
        coef[cols], *_ = np.linalg.lstsq(x[:, cols] / y[:, None], np.ones_like(y), rcond=None)
        negative = [i for i in cols if coef[i] < 0 and i >= 3]  # 0-2: the linear part, judged later
        if not negative:
            return coef
        keep[min(negative, key=lambda i: coef[i])] = False


def fit_step_times(
    tokens: np.ndarray,
    prefill_attn: np.ndarray,
    decode_ctx: np.ndarray,
    seqs: np.ndarray,
    seconds: np.ndarray,
    lone: np.ndarray,
    *,
    floor_max_tokens: int = FLOOR_MAX_TOKENS,
    request_latency: bool = True,
    per_seq: bool = True,
) -> StepFit:
    """Fit the step model to measured times of steps with T tokens, A, C and S sequences given
    a token (cato_core/profile.py).

    ``lone`` marks rows that are a lone request's TTFT (one step plus the request latency, a
    constant); the others are step times seen between tokens. The attention terms and the
    latency come from one least-squares fit on relative error of the whole form, linear in
    its coefficients once each row's side of the floor is fixed (T <= floor_max_tokens: the
    floor; above: the line), or without a floor if that fits better; the linear part is then
    fit_floored_linear of the times less those terms, so it follows the same rule as Vidur's
    operator timings. ``request_latency=False`` / ``per_seq=False`` fit the form without the
    latency / the per-sequence term (to compare). S and T are equal on decode rows; the
    prefill rows (S = 1) and mixed rows (S = n + 1, T = n + p) tell them apart.
    """
    t, a, c, s, y = (np.asarray(v, float) for v in (tokens, prefill_attn, decode_ctx, seqs, seconds))
    ttft = np.asarray(lone, bool).astype(float)
    small = (t <= floor_max_tokens).astype(float)
    extra = np.c_[a, c, ttft, s]
    keep_extra = [bool(a.any()), bool(c.any()), request_latency and bool(ttft.any()), per_seq and bool(s.any())]
    floored = np.c_[small, 1 - small, (1 - small) * t, extra]
    plain = np.c_[np.ones_like(t), t, np.zeros_like(t), extra]

    def rms(x: np.ndarray, coef: np.ndarray) -> float:
        return float(np.sqrt(np.mean(((x @ coef - y) / y) ** 2)))

    candidates = [(plain, _rel_lstsq(plain, y, [True, True, False, *keep_extra]), False)]
    if small.sum() >= 1 and (1 - small).sum() >= 2:
        coef = _rel_lstsq(floored, y, [True, True, True, *keep_extra])
        if coef[1] >= 0 and coef[2] > 0:
            candidates.append((floored, coef, True))
    _, coef, used_floor = min(candidates, key=lambda cand: rms(cand[0], cand[1]))
    attn, ctx, latency, seq = (float(v) for v in coef[3:])
    linear_part = y - attn * a - ctx * c - latency * ttft - seq * s
    ok = linear_part > 0  # a row the other terms over-explain says nothing of the linear part
    linear = fit_floored_linear(t[ok], linear_part[ok], floor_max_tokens)
    return StepFit(linear, attn, ctx, seq, latency, used_floor)


@dataclass(frozen=True)
class MeasuredSteps:
    """Measured step times (cato-live profile): one row per grid point, medians of repeats.

    part: "prefill" (a lone request's TTFT: one step plus the request latency), "decode"
    (the steady inter-token gap of a batch), "mixed" (the decoders' gap while a prompt is
    prefilled with them) or "arrival" (the engine time one arriving prompt cost a decoding
    batch; not a step: it gives frontend_cpu_s); tokens, prefill_attn, decode_ctx, seqs: T, A,
    C and S of the step (for "arrival", of the mixed step the prompt brings).
    """

    part: list[str]
    tokens: list[int]
    prefill_attn: list[float]
    decode_ctx: list[float]
    seqs: list[int]
    seconds: list[float]

    def arrays(self) -> tuple[np.ndarray, ...]:
        """T, A, C, S, seconds and which rows are lone TTFTs, of the step rows: fit_step_times' arguments."""
        rows = [i for i, p in enumerate(self.part) if p != "arrival"]

        def column(values: list) -> np.ndarray:
            return np.array([values[i] for i in rows], float)

        lone = np.array([self.part[i] == "prefill" for i in rows])
        return (
            column(self.tokens),
            column(self.prefill_attn),
            column(self.decode_ctx),
            column(self.seqs),
            column(self.seconds),
            lone,
        )


def part_residuals(profile: DeviceProfile, steps: MeasuredSteps) -> dict[str, tuple[float, float, int]]:
    """Per part: (rms, max) of (model - measured) / measured, and the number of points."""
    out = {}
    for part in dict.fromkeys(p for p in steps.part if p != "arrival"):
        rel = np.array(
            [
                ((profile.prefill_s(t) if p == "prefill" else profile.step_s(t, a, c, n)) - y) / y
                for p, t, a, c, n, y in zip(
                    steps.part,
                    steps.tokens,
                    steps.prefill_attn,
                    steps.decode_ctx,
                    steps.seqs,
                    steps.seconds,
                    strict=True,
                )
                if p == part
            ]
        )
        out[part] = (float(np.sqrt(np.mean(rel**2))), float(np.abs(rel).max()), len(rel))
    return out


def modelled_arrival_s(profile: DeviceProfile, decoders: int, prompt: int, context: float) -> float:
    """Engine time the step model charges one prompt arriving beside ``decoders`` decoding
    sequences holding ``context`` tokens: a mixed step in place of a decode step."""
    mixed = profile.step_s(decoders + prompt, prompt * prompt, context, decoders + 1)
    return mixed - profile.step_s(decoders, 0, context, decoders)


def fit_frontend_cpu(profile: DeviceProfile, steps: MeasuredSteps) -> tuple[float, float, float] | None:
    """frontend_cpu_s from the "arrival" rows: what an arrival cost beyond the mixed step the
    fitted step model charges for it (0 if nothing). (frontend_cpu_s, measured s, mixed-step s),
    medians over the rows; None: no arrival rows."""
    rows = [
        (y, modelled_arrival_s(profile, s - 1, t - (s - 1), c))
        for part, t, c, s, y in zip(steps.part, steps.tokens, steps.decode_ctx, steps.seqs, steps.seconds, strict=True)
        if part == "arrival"
    ]
    if not rows:
        return None
    measured = float(np.median([y for y, _ in rows]))
    mixed = float(np.median([m for _, m in rows]))
    return max(measured - mixed, 0.0), measured, mixed


def _residual_text(res: dict[str, tuple[float, float, int]]) -> str:
    return "; ".join(f"{part} rms {rms:.1%}, max {mx:.1%} ({n} points)" for part, (rms, mx, n) in res.items())


def fit_measured_profile(
    steps: MeasuredSteps,
    *,
    name: str,
    model: str,
    device: str,
    kv_capacity_tokens: int,
    cold_start_s: float,
    cold_start_basis: str,
    basis: list[str],
    floor_max_tokens: int = FLOOR_MAX_TOKENS,
) -> DeviceProfile:
    """Profile from step times measured on the device (``cato-live profile``); ``basis``: the
    provenance lines saying where, when and how (backend, host, grid)."""
    t, a, c, s, y, lone = steps.arrays()
    if len(t) < 4 or (~lone).sum() < 2:
        raise InputError("measurements", "points", "at least 4, 2 of them steps between tokens")
    fit = fit_step_times(t, a, c, s, y, lone, floor_max_tokens=floor_max_tokens)
    lin = fit.linear
    profile = DeviceProfile(
        name=name,
        model=model,
        device=device,
        **{field: _sig(value) for field, value in _step_coefficients(fit).items()},
        kv_capacity_tokens=kv_capacity_tokens,
        cold_start_s=round(cold_start_s, 1),
        estimate=False,
    )
    res = part_residuals(profile, steps)
    lines = [
        *basis,
        "Fit (cato_profiles.fit.fit_step_times): attention terms, the per-sequence term and request "
        "latency by least squares "
        "on relative error over all points"
        + (f", floor for T <= {floor_max_tokens}" if fit.floored_jointly else ", no floor")
        + "; linear part by fit_floored_linear of the times less those terms"
        + (
            f" (floor = median of the {lin.floor_rows} points with T <= {floor_max_tokens}, "
            f"{lin.floor_s * 1e3:.3f} ms; line from the {lin.n_points - lin.floor_rows} above)."
            if lin.floor_s > 0
            else " (no floor: one did not lower the residuals)."
        ),
        f"Residuals of the profile, (model - measured) / measured: {_residual_text(res)}.",
    ]

    def without(**drop: bool) -> str:
        other = fit_step_times(t, a, c, s, y, lone, floor_max_tokens=floor_max_tokens, **drop)
        bare = dataclasses.replace(profile, **_step_coefficients(other))
        return _residual_text(part_residuals(bare, steps))

    if fit.per_seq_s > 0:
        lines.append(
            f"per_seq_s: {fit.per_seq_s * 1e3:.3f} ms a sequence given a token in a step (sampling, output "
            f"processing, streaming). The form without it fits: {without(per_seq=False)}."
        )
    if (front := fit_frontend_cpu(profile, steps)) is not None:
        frontend_cpu_s, measured, mixed = front
        profile = dataclasses.replace(profile, frontend_cpu_s=_sig(frontend_cpu_s))
        lines.append(
            f"frontend_cpu_s: an arriving prompt cost the decoding batch {measured * 1e3:.2f} ms of engine time, "
            f"its mixed step {mixed * 1e3:.2f} ms of it; the rest, {frontend_cpu_s * 1e3:.2f} ms, is the API "
            "server's work on the engine's core, which a busy engine pays before its next step."
        )
    if fit.request_latency_s > 0:
        lines.append(
            f"request_latency_s: a lone request's TTFT less its prefill step, {fit.request_latency_s * 1e3:.2f} ms "
            f"(HTTP, input processing, detokenizing, streaming). The form without it fits: "
            f"{without(request_latency=False)}."
        )
    lines.append(f"cold_start_s: {cold_start_basis}.")
    return dataclasses.replace(profile, provenance="\n".join(lines))


def _step_coefficients(fit: StepFit) -> dict[str, float]:
    """A fit's step coefficients as DeviceProfile fields."""
    return dict(
        overhead_s=max(fit.linear.overhead_s, 0.0),
        per_token_s=max(fit.linear.per_token_s, 0.0),
        linear_floor_s=fit.linear.floor_s,
        per_seq_s=fit.per_seq_s,
        prefill_attn_s=fit.prefill_attn_s,
        decode_ctx_s=fit.decode_ctx_s,
        request_latency_s=fit.request_latency_s,
    )


def attention_coefficients(arch: ModelArch, spec: DeviceSpec, tensor_parallel: int = 1) -> tuple[float, float]:
    """(prefill_attn_s per unit of A, decode_ctx_s per context token); heads split over TP."""
    return (
        arch.attn_flops_per_a / tensor_parallel / spec.achieved_flops,
        arch.kv_bytes_per_token / tensor_parallel / spec.achieved_bandwidth,
    )


def kv_capacity_tokens(
    arch: ModelArch, spec: DeviceSpec, tensor_parallel: int = 1, gpu_memory_utilization: float = 0.9
) -> int:
    """Tokens of KV cache a replica holds (vLLM's activation reserve is not subtracted)."""
    free = spec.hbm_bytes * tensor_parallel * gpu_memory_utilization - arch.weight_bytes
    if free <= 0:
        raise InputError(spec.name, "hbm_bytes", f"room for {arch.name}'s weights")
    return int(free // arch.kv_bytes_per_token)


def _sig(x: float) -> float:
    # 6 significant digits: far finer than the model's accuracy, and stable across BLAS builds.
    return float(f"{x:.6g}")


def fit_vidur_profile(
    csv_path: str | Path,
    *,
    name: str,
    model: str,
    device: str,
    tensor_parallel: int = 1,
    arch: ModelArch = CODELLAMA_7B,
    spec: DeviceSpec = A100_80GB,
    gpu_memory_utilization: float = 0.9,
    max_tokens: int | None = None,
    floor_max_tokens: int = FLOOR_MAX_TOKENS,
    cold_start_s: float = 20.0,
    cold_start_basis: str = "13.5 GB fp16 weights read from NVMe (~2 GB/s, ~7 s) plus vLLM "
    "start-up (CUDA context, memory profiling, CUDA graph capture, ~13 s)",
    source: str | None = None,
) -> DeviceProfile:
    """Profile from a Vidur mlp.csv: fitted (floored) linear part, modelled attention and KV
    capacity."""
    t, y = read_vidur_mlp(csv_path, n_layers=arch.n_layers, tensor_parallel=tensor_parallel, d_model=arch.d_model)
    if max_tokens is not None:
        t, y = t[t <= max_tokens], y[t <= max_tokens]
    if len(t) < 2:
        raise InputError(str(csv_path), "num_tokens", "at least 2 rows to fit")
    fit = fit_floored_linear(t, y, floor_max_tokens)
    plain = fit_linear(t, y)
    small = t <= floor_max_tokens
    small_rel = np.abs(np.maximum(fit.floor_s, fit.overhead_s + fit.per_token_s * t[small]) - y[small]) / y[small]
    attn, ctx = attention_coefficients(arch, spec, tensor_parallel)
    kv = kv_capacity_tokens(arch, spec, tensor_parallel, gpu_memory_utilization)
    weight_read = arch.weight_bytes / tensor_parallel / spec.bandwidth
    provenance = "\n".join(
        [
            f"Linear part fitted to Vidur's measured operator timings (microsoft/vidur, MIT): "
            f"{source or Path(csv_path).as_posix()}, TP{tensor_parallel}.",
            f"Per step: emb + {arch.n_layers} layers x (input_layernorm, attn_pre_proj, attn_rope, "
            "attn_post_proj, post_attention_layernorm, mlp_up_proj, mlp_act, mlp_down_proj, add), "
            "medians.",
            *(
                [
                    f"Small steps are weight-read bound: linear_floor_s = median of the "
                    f"{fit.floor_rows} rows with T <= {floor_max_tokens} "
                    f"({fit.floor_s * 1e3:.2f} ms); a + b*T fitted by least squares on relative "
                    f"error to the {fit.n_points - fit.floor_rows} rows with T > {floor_max_tokens}; "
                    f"the two meet at T = {(fit.floor_s - fit.overhead_s) / fit.per_token_s:.0f}.",
                    f"Residuals of max(floor, a + b*T) over all {fit.n_points} rows, "
                    f"T = {fit.t_min}..{fit.t_max}: rms {fit.rms_rel:.1%}, max {fit.max_rel:.1%} at "
                    f"T = {fit.max_rel_tokens}; max {small_rel.max():.1%} over T <= {floor_max_tokens} "
                    f"(a line alone fitted to all rows: rms {plain.rms_rel:.1%}, max "
                    f"{plain.max_rel:.1%} at T = {plain.max_rel_tokens}).",
                ]
                if fit.floor_s > 0
                else [
                    f"Fit a + b*T by least squares on relative error, {fit.n_points} rows, "
                    f"T = {fit.t_min}..{fit.t_max}: relative residuals rms {fit.rms_rel:.1%}, "
                    f"max {fit.max_rel:.1%} at T = {fit.max_rel_tokens}; no floor (one fitted to "
                    f"T <= {floor_max_tokens} did not lower the residuals).",
                ]
            ),
            f"Attention is NOT measured; modelled for {arch.name} on {spec.name}:",
            f"  prefill_attn_s = 2*layers*heads*head_dim = {arch.attn_flops_per_a} FLOPs per unit "
            f"of A / ({spec.peak_flops / 1e12:g} TFLOP/s x {spec.flops_efficiency:g});",
            f"  decode_ctx_s = 2*layers*kv_heads*head_dim*{arch.dtype_bytes} = "
            f"{arch.kv_bytes_per_token} bytes per context token / "
            f"({spec.bandwidth / 1e12:g} TB/s x {spec.bandwidth_efficiency:g}).",
            f"  Check: reading {arch.weight_bytes / 1e9:.2f} GB of weights at "
            f"{spec.bandwidth / 1e12:g} TB/s takes {weight_read * 1e3:.2f} ms; "
            f"Vidur's T={int(t[0])} step is {y[0] * 1e3:.2f} ms"
            + (
                f" and the floor {fit.floor_s * 1e3:.2f} ms (weights read at "
                f"{weight_read / fit.floor_s:.2f} of the bandwidth)."
                if fit.floor_s > 0
                else "."
            ),
            f"  Device: {spec.basis}.",
            f"kv_capacity_tokens = ({spec.hbm_bytes / GIB:g} GiB x {tensor_parallel} x "
            f"{gpu_memory_utilization:g} - {arch.weight_bytes / 1e9:.2f} GB weights) / "
            f"{arch.kv_bytes_per_token} bytes.",
            f"cold_start_s: {cold_start_basis}.",
            "estimate: false for the linear part (measured); attention is modelled."
            + (" TP > 1 omits all-reduce time." if tensor_parallel > 1 else ""),
        ]
    )
    return DeviceProfile(
        name=name,
        model=model,
        device=device,
        accelerators_per_replica=tensor_parallel,
        overhead_s=_sig(fit.overhead_s),
        per_token_s=_sig(fit.per_token_s),
        linear_floor_s=_sig(fit.floor_s),
        prefill_attn_s=_sig(attn),
        decode_ctx_s=_sig(ctx),
        kv_capacity_tokens=kv,
        cold_start_s=cold_start_s,
        estimate=False,
        provenance=provenance,
    )


def scale_profile(
    base: DeviceProfile,
    *,
    name: str,
    model: str,
    device: str,
    compute_ratio: float,
    bandwidth_ratio: float,
    kv_capacity_tokens: int,
    cold_start_s: float,
    basis: str,
    param_ratio: float = 1.0,
    attn_flops_ratio: float = 1.0,
    kv_bytes_ratio: float = 1.0,
) -> DeviceProfile:
    """Estimate for another device/model. Ratios are target over base (achieved FLOP/s, bytes/s,
    parameters, attention FLOPs per unit of A, KV bytes per token)."""
    return dataclasses.replace(
        base,
        **dict(
            name=name,
            model=model,
            device=device,
            # the fixed cost of a step is mostly reading the weights once: bandwidth-bound
            overhead_s=_sig(base.overhead_s * param_ratio / bandwidth_ratio),
            # the floor IS the time to read the weights once: weight bytes / bandwidth
            linear_floor_s=_sig(base.linear_floor_s * param_ratio / bandwidth_ratio),
            per_token_s=_sig(base.per_token_s * param_ratio / compute_ratio),
            prefill_attn_s=_sig(base.prefill_attn_s * attn_flops_ratio / compute_ratio),
            decode_ctx_s=_sig(base.decode_ctx_s * kv_bytes_ratio / bandwidth_ratio),
            kv_capacity_tokens=kv_capacity_tokens,
            cold_start_s=cold_start_s,
            estimate=True,
            provenance=f"ESTIMATE derived from profile {base.name}.\n{basis}\n"
            f"overhead_s and linear_floor_s x {param_ratio:.4g} (params) / {bandwidth_ratio:.4g} "
            "(bandwidth); "
            f"per_token_s x {param_ratio:.4g} / {compute_ratio:.4g} (compute); "
            f"prefill_attn_s x {attn_flops_ratio:.4g} / {compute_ratio:.4g}; "
            f"decode_ctx_s x {kv_bytes_ratio:.4g} (KV bytes) / {bandwidth_ratio:.4g}.\n"
            "Base profile provenance:\n" + "\n".join("  " + line for line in base.provenance.splitlines()),
        ),
    )


def port_profile(
    base: DeviceProfile,
    *,
    name: str,
    model: str,
    device: str,
    base_arch: ModelArch,
    arch: ModelArch,
    base_spec: DeviceSpec,
    spec: DeviceSpec,
    cold_start_s: float,
    cold_start_basis: str,
    gpu_memory_utilization: float = 0.9,
) -> DeviceProfile:
    """scale_profile with the ratios and KV capacity computed from architectures and specs."""
    tp = base.accelerators_per_replica
    kv = kv_capacity_tokens(arch, spec, tp, gpu_memory_utilization)
    basis = "\n".join(
        [
            f"{arch.name} ({arch.params / 1e9:g}B params, {arch.n_layers} layers, {arch.n_heads} "
            f"heads, {arch.n_kv_heads} KV heads, head_dim {arch.head_dim}) on {spec.name}.",
            f"Device: {spec.peak_flops / 1e12:g} TFLOP/s x {spec.flops_efficiency:g}, "
            f"{spec.bandwidth / 1e12:g} TB/s x {spec.bandwidth_efficiency:g}, "
            f"{spec.hbm_bytes / GIB:g} GiB; {spec.basis}.",
            f"kv_capacity_tokens = ({spec.hbm_bytes / GIB:g} GiB x {tp} x "
            f"{gpu_memory_utilization:g} - {arch.weight_bytes / 1e9:.2f} GB weights) / "
            f"{arch.kv_bytes_per_token} bytes.",
            f"cold_start_s: {cold_start_basis}.",
        ]
    )
    return scale_profile(
        base,
        name=name,
        model=model,
        device=device,
        compute_ratio=spec.achieved_flops / base_spec.achieved_flops,
        bandwidth_ratio=spec.achieved_bandwidth / base_spec.achieved_bandwidth,
        param_ratio=arch.params / base_arch.params,
        attn_flops_ratio=arch.attn_flops_per_a / base_arch.attn_flops_per_a,
        kv_bytes_ratio=arch.kv_bytes_per_token / base_arch.kv_bytes_per_token,
        kv_capacity_tokens=kv,
        cold_start_s=cold_start_s,
        basis=basis,
    )


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.ScalarNode:
    # multi-line provenance as a readable literal block
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def write_profile(profile: DeviceProfile, path: str | Path, generated_by: str = "cato_profiles.fit") -> Path:
    path = Path(path)
    header = (
        f"# Device profile {profile.name}: {profile.model} on {profile.device}"
        f"{' (ESTIMATE)' if profile.estimate else ''}.\n"
        "# step_s = max(linear_floor_s, overhead_s + per_token_s*T) "
        + ("+ per_seq_s*S " if profile.per_seq_s else "")
        + "+ prefill_attn_s*A + decode_ctx_s*C (cato_core/profile.py)"
        + (";\n# clients see each token request_latency_s later" if profile.request_latency_s else "")
        + (", and gateway_latency_s later again through CATO's gateway" if profile.gateway_latency_s else "")
        + (";\n# a request reaching a busy engine costs it frontend_cpu_s" if profile.frontend_cpu_s else "")
        + ".\n"
        + f"# Generated by {generated_by}; regenerate rather than edit.\n"
    )
    # a field at its default of 0 is left out, so files written before it existed stay as they were
    optional = ("per_seq_s", "request_latency_s", "gateway_latency_s", "frontend_cpu_s")
    fields = {k: v for k, v in dataclasses.asdict(profile).items() if k not in optional or v}
    body = yaml.dump(fields, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body)
    return path


SHIPPED_COLD_START = {
    "a100": (
        20.0,
        "13.5 GB fp16 weights read from NVMe (~2 GB/s, ~7 s) plus vLLM start-up "
        "(CUDA context, memory profiling, CUDA graph capture, ~13 s)",
    ),
    "910b4": (
        30.0,
        "ASSUMED: ~14 GB weights from NVMe plus vllm-ascend start-up (CANN/torch-npu "
        "init and graph compilation are slower than CUDA's); the paper names cold starts "
        "during bursts as a limit",
    ),
}


def build_shipped_profiles(data_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Regenerate cato_profiles/*.yaml from the copied Vidur data."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    base = fit_vidur_profile(
        data_dir / VIDUR_A100_CSV,
        name="codellama-7b_a100",
        model="codellama/CodeLlama-7b-hf",
        device="NVIDIA A100-80GB",
        cold_start_s=SHIPPED_COLD_START["a100"][0],
        cold_start_basis=SHIPPED_COLD_START["a100"][1],
        source=f"data/{VIDUR_A100_CSV}",
    )
    ports = [
        ("codellama-7b_910b4", "codellama/CodeLlama-7b-hf", CODELLAMA_7B),
        ("starcoder2-7b_910b4", "bigcode/starcoder2-7b", STARCODER2_7B),
    ]
    profiles = [base] + [
        port_profile(
            base,
            name=n,
            model=m,
            device="Huawei Ascend 910B4",
            base_arch=CODELLAMA_7B,
            arch=a,
            base_spec=A100_80GB,
            spec=ASCEND_910B4,
            cold_start_s=SHIPPED_COLD_START["910b4"][0],
            cold_start_basis=SHIPPED_COLD_START["910b4"][1],
        )
        for n, m, a in ports
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_profile(p, out_dir / f"{p.name}.yaml") for p in profiles]
