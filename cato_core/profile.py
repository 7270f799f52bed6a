"""Device profiles: how long one engine step takes for one model on one device.

A step of a continuous-batching engine (vLLM) runs every running sequence once: prefill
chunks of new prompts and one token for each decoding sequence. Its time is modelled as

    step_s = max(linear_floor_s, overhead_s + per_token_s * T)
             + per_seq_s * S + prefill_attn_s * A + decode_ctx_s * C

T   tokens in the step (prefill chunk tokens + one per decoding sequence): the linear
    layers (projections, MLP), fitted from operator timings. Small steps are bound by
    reading the weights once, whatever T: they take at least linear_floor_s (Vidur's A100
    timings are flat at ~9.3 ms for T <= 64, where the line alone under-predicts by up to
    30%). linear_floor_s = 0 means no floor: the plain line;
S   sequences that come out of the step with a token (every decoding sequence, and a prompt
    whose last chunk is in the step): sampling, output processing, detokenizing and
    streaming are paid per sequence, not per token. On vLLM's CPU build they run on the
    engine's own core, and a decode step grew by about 0.3-0.6 ms a sequence while a prefill
    token cost microseconds, which T alone cannot express. 0 (the default, and every
    Vidur-derived profile, timed from operators alone) means no such cost;
A   sum over prefill chunks of chunk * (2 * done + chunk), i.e. p**2 for a whole prompt of
    p tokens: causal self-attention over the prompt, compute-bound;
C   context tokens (prompt + generated) held by the decoding sequences: decode attention
    reads their KV cache, memory-bound.

A client of a live server sees every token request_latency_s after the engine makes it:
the API path's fixed cost per request (HTTP, input processing, detokenizing and streaming),
measured as the part of a lone request's TTFT that no step accounts for (cato-live profile).
The simulator adds it to the first token and to the end of each request; 0 (the default,
and every Vidur-derived profile) means clients see the engine's own times.

A client of CATO's gateway sees every token gateway_latency_s later again: the gateway's two
HTTP hops (reading the call and routing it, relaying the answer), measured by `cato-live
profile` as how much later a lone call's first token reaches a client through the gateway
than straight from the replica. The simulator adds it where it adds request_latency_s;
0 (the default) means clients talk to the replicas directly.

On vLLM's CPU build the API server runs on the engine's own core. Its work for a new request
(reading and checking the body, handing it to the engine) overlaps nothing when the engine
is idle, and is then inside request_latency_s; when the engine is busy, the two share the
core: the engine loses that CPU time and the request reaches it that much later.
frontend_cpu_s is that time per request: the simulator charges it when the engine admits the
request into a running batch, before the step it joins (cato_sim/engine.py). 0 (the
default, and every GPU profile, whose front end has CPU cores of its own) means none.

In a run of decode-only steps the batch size n, hence the linear part max(floor, a + b*n)
and the per-sequence part per_seq_s * n, is constant; only the context grows (by n a step),
so run times stay closed-form.

Profiles are data files (cato_profiles/*.yaml) that say where their numbers come from.

A profile is a frozen pydantic dataclass, not a BaseModel: the engine, the replica state and
the routers read its numbers on every step and every decision, and a BaseModel's attribute
hook makes each read about four times slower (28 against 7 ns). Copy one with
``dataclasses.replace`` (it validates again) and write it with ``save_profile``. Its
constraints are in the types (NonNegativeFloat), not in ``Field(...)`` defaults: a FieldInfo
left on the class as a required field's default makes every read of that field as slow again.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ConfigDict, NonNegativeFloat, PositiveInt, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from cato_core.errors import InputError
from cato_core.yaml_file import parse_yaml, read_yaml


@dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))
class DeviceProfile:
    name: str
    model: str
    device: str
    accelerators_per_replica: PositiveInt = 1
    overhead_s: NonNegativeFloat
    per_token_s: NonNegativeFloat
    # least time of the linear part (weight-read bound small steps); 0 = no floor
    linear_floor_s: NonNegativeFloat = 0.0
    # per sequence given a token in a step (see the module docstring); 0 = none
    per_seq_s: NonNegativeFloat = 0.0
    prefill_attn_s: NonNegativeFloat
    decode_ctx_s: NonNegativeFloat
    # per request, between the engine and the client (see the module docstring); 0 = none
    request_latency_s: NonNegativeFloat = 0.0
    # per request, through CATO's gateway on top of request_latency_s (see the module docstring); 0 = none
    gateway_latency_s: NonNegativeFloat = 0.0
    # per request arriving at a busy engine, on its core (see the module docstring); 0 = none
    frontend_cpu_s: NonNegativeFloat = 0.0
    kv_capacity_tokens: PositiveInt
    cold_start_s: NonNegativeFloat
    estimate: bool = False  # True until a measurement on the device replaces it
    provenance: str = ""

    def linear_s(self, tokens: int) -> float:
        """Time of the linear layers for a step of ``tokens`` tokens (floored line)."""
        return max(self.linear_floor_s, self.overhead_s + self.per_token_s * tokens)

    def step_s(self, tokens: int, prefill_attn: float, decode_ctx: float, seqs: int) -> float:
        """Time of one engine step (see the module docstring for T, A, C and S = ``seqs``)."""
        # linear_s inlined: the engine asks this for every step it runs
        linear = max(self.linear_floor_s, self.overhead_s + self.per_token_s * tokens)
        return linear + self.per_seq_s * seqs + self.prefill_attn_s * prefill_attn + self.decode_ctx_s * decode_ctx

    def prefill_s(self, prompt_tokens: int) -> float:
        """Isolated prefill of a whole prompt in one step, as the client sees it: the step plus
        the request and gateway latencies; it ends with the first token."""
        return self.step_s(prompt_tokens, prompt_tokens * prompt_tokens, 0, 1) + self.client_latency_s

    @property
    def client_latency_s(self) -> float:
        """How much later than the engine a client sees each token: request plus gateway latency."""
        return self.request_latency_s + self.gateway_latency_s

    def decode_s(self, prompt_tokens: int, output_tokens: int) -> float:
        """Isolated decode of the output tokens after the first, on an otherwise idle replica.

        Each of the k = o-1 steps runs one token of one sequence (linear_s(1) + per_seq_s);
        step j (1..k) reads a context of p + j tokens, summed in closed form: k * (p + o/2).
        """
        k = max(output_tokens - 1, 0)
        return k * (self.linear_s(1) + self.per_seq_s) + self.decode_ctx_s * k * (prompt_tokens + output_tokens / 2)

    def _decode_base_s(self, seqs: int, context: int) -> float:
        # first step of a decode-only run: constant linear and per-sequence parts plus the initial KV read
        return self.linear_s(seqs) + self.per_seq_s * seqs + self.decode_ctx_s * context

    def decode_run_s(self, seqs: int, context: int, steps: int) -> float:
        """Time of ``steps`` decode-only steps of ``seqs`` sequences holding ``context`` tokens.

        Each step adds one token to every sequence, so the context grows by ``seqs`` a step;
        the linear part, max(floor, a + b*seqs), and per_seq_s * seqs are the same every step.
        """
        # _decode_base_s inlined: the engine asks this for every decode stretch
        base = (
            max(self.linear_floor_s, self.overhead_s + self.per_token_s * seqs)
            + self.per_seq_s * seqs
            + self.decode_ctx_s * context
        )
        return steps * base + self.decode_ctx_s * seqs * steps * (steps - 1) / 2

    def decode_steps_within(self, seqs: int, context: int, elapsed_s: float) -> int:
        """How many whole decode steps of such a batch finish within ``elapsed_s``: the largest
        k with decode_run_s(seqs, context, k) <= elapsed_s (0 if none)."""
        base = self._decode_base_s(seqs, context)
        g = self.decode_ctx_s * seqs
        if g == 0:
            if base <= 0:
                return 0  # steps take no time: no finite answer; callers never ask
            k = max(int(elapsed_s // base), 0)
        else:
            # Largest k with k*base + g*k*(k-1)/2 <= elapsed: root of g/2 k^2 + (base - g/2) k - e.
            b = base - g / 2
            k = max(int((-b + max(b * b + 2 * g * elapsed_s, 0.0) ** 0.5) / g), 0)
        # the root is within a step or so of the answer; settle it against decode_run_s itself
        while k > 0 and self.decode_run_s(seqs, context, k) > elapsed_s:
            k -= 1
        while self.decode_run_s(seqs, context, k + 1) <= elapsed_s:
            k += 1
        return k


def load_profile(ref: str | Path) -> DeviceProfile:
    """Load a profile by file path, or by the name of one shipped in cato_profiles."""
    path = Path(ref)
    if not path.suffix:
        shipped = resources.files("cato_profiles") / f"{ref}.yaml"
        if not shipped.is_file():
            raise InputError(str(ref), "profile", f"a profile file or one of {shipped_profiles()}")
        source = f"cato_profiles/{ref}.yaml"
        data = parse_yaml(shipped.read_bytes(), source, "profile")
    else:
        if not path.exists():
            raise InputError(str(path), "profile", "an existing profile YAML file")
        source = str(path)
        data = read_yaml(path, "profile")
    try:
        return TypeAdapter(DeviceProfile).validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(source, ".".join(map(str, err["loc"])) or "profile", err["msg"]) from None


def save_profile(profile: DeviceProfile, path: str | Path) -> Path:
    """Write ``profile`` as a plain YAML file that load_profile reads back equal: a derived
    profile (a slowed copy, an inline one from a DEPLOY) handed to a simulation by path.
    Measured and shipped profiles are written with their header by cato_profiles.fit."""
    path = Path(path)
    path.write_text(yaml.safe_dump(dataclasses.asdict(profile), sort_keys=False))
    return path


def shipped_profiles() -> list[str]:
    folder = resources.files("cato_profiles")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
